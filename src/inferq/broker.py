"""kombu's Redis transport, with its acks-late bookkeeping written in batches.

kombu's Redis channel builds a new `redis.Redis` client (with its table of response
callbacks) for every acknowledgement and every unacked-message record, so twice per
job. Measured on a worker at 40 jobs/s, that construction alone was 13 % of the
process's CPU. A client over the channel's connection pool is safe to share between
threads (each command checks out its own connection), so the channel keeps one.

kombu also writes each delivered message's unacked record (ZADD + HSET in MULTI/EXEC)
on the consumer thread before handing the message over, and removes it at the ack in
another round trip: a fifth of a worker's CPU at a thousand jobs in flight, and the
record's round trip sits between every message and the next. `BatchedQoS` hands those
writes to one thread that sends whatever accumulated while its previous write was under
way, in one pipeline; a record acked before it was written is never written.

What that changes: for the moment between a message's delivery and its record's write
(one round trip to Redis), a worker killed with SIGKILL leaves no record of the message,
so the broker will not hand it out again after the visibility timeout. inferq does not
rely on that: the job row says `queued` or `running`, and the orphan sweep or the reaper
publishes the job again within seconds (`inferq.orphans`, `inferq.reaper`). An ack lost
the same way leaves a record that the broker restores after the visibility timeout; its
job has ended, so the claim drops the message. A warm shutdown writes everything before
kombu restores the messages it holds.

`RedisChannel` also takes more than one message per wake-up. kombu pops one message per
BRPOP: a round trip, a wake of the event loop and a fresh BRPOP per message, a sixth of an
S2 worker's CPU. After the BRPOP's message, the channel pops as many more as its prefetch
allows (one script, queues in BRPOP's order), and delivers them in turn.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from inferq.failure_log import FailureLog
from inferq.redis_clients import driver_info

log = logging.getLogger(__name__)

TRANSPORT = "inferq.broker:RedisTransport"
# A failed write is tried again after this long (Redis away); its items are kept.
RETRY_SECONDS = 0.5
# A write whose reply has not come by then fails (and is tried again): a silent Redis
# must not hold a warm shutdown, which waits for the last write, for good.
WRITE_TIMEOUT_SECONDS = 10.0
# Messages popped per wake-up besides BRPOP's one: bounds the event loop's time on them.
DRAIN_LIMIT = 64
# A BRPOP answered sooner than this found a message waiting: there may be more.
QUICK_BRPOP_SECONDS = 0.002
# Pops up to ARGV[1] messages from KEYS in order (the first key's first, as BRPOP does);
# returns key, message, key, message, ... RPOP's count needs Redis 6.2.
DRAIN_SCRIPT = """
local left = tonumber(ARGV[1])
local out = {}
for _, key in ipairs(KEYS) do
  if left <= 0 then break end
  local items = redis.call('RPOP', key, left)
  if items then
    for _, item in ipairs(items) do
      out[#out + 1] = key
      out[#out + 1] = item
    end
    left = left - #items
  end
end
return out
"""


class BatchedQoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        # Serialises writes: the writer thread's and a shutdown's final flush.
        self._writing = threading.Lock()
        self._records: dict[str, tuple[float, str]] = {}  # tag → (delivered at, record)
        self._acked: list[str] = []  # tags whose written record is to be removed
        self._due = threading.Event()
        self._writer: threading.Thread | None = None
        self._client: Any = None

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        raw = [message._raw, delivery["exchange"], delivery["routing_key"]]
        record = orjson.dumps(raw).decode()  # what kombu's QoS.append stores
        with self._lock:
            self._records[delivery_tag] = (time.time(), record)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_forever, name="inferq-acks", daemon=True
                )
                self._writer.start()
        self._due.set()
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        self._forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:  # kombu restores the message from its record: write it first
            self.flush()
            super().reject(delivery_tag, requeue=True)  # type: ignore[no-untyped-call]
            return
        self._forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        # The channel closes: acks and records go out before kombu restores what it holds.
        try:
            self.flush()
        except Exception as exc:
            log.warning("broker: unacked records not written at close (%s)", exc)
        restored = super().restore_unacked_once(stderr)  # type: ignore[no-untyped-call]
        with self._writing:
            if self._client is not None:
                self._client.connection_pool.disconnect()
        return restored

    def restore_unacked(self, client: Any = None) -> Any:
        self.flush()  # kombu restores held messages from their records
        return super().restore_unacked(client)  # type: ignore[no-untyped-call]

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        self.flush()
        super().restore_by_tag(tag, client, leftmost)  # type: ignore[no-untyped-call]

    def _forget(self, tag: str) -> None:
        with self._lock:
            if self._records.pop(tag, None) is not None:
                return  # never written: nothing to remove
            self._acked.append(tag)
        self._due.set()

    def flush(self) -> None:
        """Write every pending record and removal now (from any thread)."""
        with self._writing:
            self._write_batch()

    def _write_forever(self) -> None:
        failures = FailureLog(log, "writing the broker's unacked records")
        while True:
            self._due.wait()
            self._due.clear()
            try:
                self.flush()
            except Exception as exc:  # Redis away: the items wait for the next try
                failures.failed(exc)
                time.sleep(RETRY_SECONDS)
                self._due.set()
            else:
                failures.worked()

    def _write_batch(self) -> None:
        with self._lock:
            records, self._records = self._records, {}
            acked, self._acked = self._acked, []
        if not records and not acked:
            return
        try:
            pipe = self._writer_client().pipeline(transaction=False)
            if records:
                pipe.zadd(self.unacked_index_key, {t: at for t, (at, _) in records.items()})
                pipe.hset(self.unacked_key, mapping={t: r for t, (_, r) in records.items()})
            if acked:
                pipe.zrem(self.unacked_index_key, *acked)
                pipe.hdel(self.unacked_key, *acked)
            pipe.execute()
        except BaseException:
            # Kept for the next write. A record acked meanwhile is in both lists: the
            # write adds it, then removes it.
            with self._lock:
                self._records = {**records, **self._records}
                self._acked[:0] = acked
            raise

    def _writer_client(self) -> Any:
        """A client over a pool of the writes' own. A closing channel disconnects its
        pool, connections in use included; a write in flight on one of them was left
        waiting on its socket for good, and the close waiting for that write with it."""
        if self._client is None:
            channel = self.channel
            params = channel._connparams()
            params["socket_timeout"] = params.get("socket_timeout") or WRITE_TIMEOUT_SECONDS
            params["max_connections"] = 2
            pool = redis.ConnectionPool(**params)
            self._client = channel.Client(connection_pool=pool)
        return self._client


class RedisChannel(kombu_redis.Channel):
    QoS = BatchedQoS
    _shared_client: Any = None
    _drain: Any = None  # the registered script; False once Redis refused it
    _backlog = False  # the last drain found messages waiting

    def _brpop_read(self, **options: Any) -> bool:
        sent = self._brpop_sent_at
        waited = time.monotonic() - sent if sent is not None else 0.0
        delivered: bool = super()._brpop_read(**options)  # type: ignore[no-untyped-call]
        # A BRPOP that waited for its message found the queues empty: at low load the drain
        # would cost a round trip per message and find nothing.
        if self._backlog or waited < QUICK_BRPOP_SECONDS:
            self._drain_more()
        return delivered

    def _drain_more(self) -> None:
        allowed = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        room = DRAIN_LIMIT if allowed is None else min(allowed, DRAIN_LIMIT)
        if room <= 0 or self._drain is False or self.global_keyprefix or not self.active_queues:
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        pri_key = self._q_for_pri
        keys = [pri_key(queue, pri) for pri in self.priority_steps for queue in queues]  # type: ignore[no-untyped-call]
        client = self._create_client()
        if self._drain is None:
            self._drain = client.register_script(DRAIN_SCRIPT)
        try:
            popped = self._drain(keys=keys, args=[room], client=client)
        except self.ResponseError as exc:  # Redis before 6.2: one message per BRPOP
            log.warning("broker: messages are taken one at a time (%s)", exc)
            self._drain = False
            return
        pairs = list(zip(popped[::2], popped[1::2], strict=True))
        self._backlog = bool(pairs)
        for i, (key, item) in enumerate(pairs):
            try:
                dest = (key.decode() if isinstance(key, bytes) else key).rsplit(self.sep, 1)[0]
                self.connection._deliver(orjson.loads(item), dest)
            except BaseException:
                # The rest were never handed over: back where they were, so none is lost.
                # (The one that raised is kombu's, as BRPOP's own message would be.)
                if rest := pairs[i + 1 :]:
                    with client.pipeline(transaction=False) as pipe:
                        for back_key, back_item in reversed(rest):
                            pipe.rpush(back_key, back_item)
                        pipe.execute()
                raise

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
