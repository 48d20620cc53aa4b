"""kombu's Redis transport with one client per channel instead of one per ack.

kombu's Redis channel builds a new `redis.Redis` client (with its table of response
callbacks) for every acknowledgement and every unacked-message record, so twice per
job. Measured on a worker at 40 jobs/s, that construction alone was 13 % of the
process's CPU. A client over the channel's connection pool is safe to share between
threads (each command checks out its own connection), so the channel keeps one.
Everything else, acks-late bookkeeping included, is kombu's.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from inferq.redis_clients import driver_info

TRANSPORT = "inferq.broker:RedisTransport"


class RedisChannel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        if self._shared_client is None:
            self._shared_client = super()._create_client(asynchronous=False)  # type: ignore[no-untyped-call]
        return self._shared_client

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        params["driver_info"] = driver_info()  # see inferq.redis_clients
        return params


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
