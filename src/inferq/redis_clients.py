"""Redis clients that do not look redis-py's version up for every connection they open.

redis-py reads its own version from the installed packages' metadata (a scan of
`sys.path`) each time it opens a connection, to send it with `CLIENT SETINFO`. A worker
with a thousand calls in flight grows its pools to hundreds of connections while it
runs: that lookup was a tenth of the worker's CPU in a py-spy profile of S2. Every
client of the process shares one `DriverInfo`, built once.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.driver_info import DriverInfo


@functools.cache
def driver_info() -> DriverInfo:
    return DriverInfo()


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    return redis.Redis.from_url(url, driver_info=driver_info(), **kwargs)


def worker_client(url: str, max_connections: int, timeout: float) -> redis.Redis:
    """A worker's client, with its timeouts explicit (redis-py before 8 has none).

    A connection that goes silent (Redis failed over behind a NAT that dropped its state:
    no reply, no reset) then errors after `timeout` and is replaced. Without it, the
    stream sink's thread, and every job's terminal event behind it, would wait on that
    socket for as long as TCP keeps it. No worker command blocks on purpose.
    """
    return sync_client(
        url,
        max_connections=max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, driver_info=driver_info(), **kwargs)
