"""The broker's acks-late bookkeeping, written in batches (inferq.broker), against Redis."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator

import redis
from kombu.connection import Connection
from kombu.message import Message

from inferq.broker import DRAIN_SCRIPT, TRANSPORT
from tests.conftest import wait_for

# kombu ships py.typed but leaves Connection, Queue, Exchange, Consumer and Message.ack
# unannotated, as redis-py does Redis.monitor: calls to them carry
# `type: ignore[no-untyped-call]`.

N = 400


def test_records_and_acks_from_many_threads_add_up_and_a_close_restores_the_rest(
    redis_url: str,
) -> None:
    url = redis_url
    server = redis.Redis.from_url(url)
    with Connection(url, transport=TRANSPORT) as conn:  # type: ignore[no-untyped-call]
        queue = conn.SimpleQueue("batched")
        for i in range(N):
            queue.put({"i": i})
        held = [queue.get(timeout=5) for _ in range(N)]
        assert server.llen("batched") == 0
        # Every delivered message gets its record, written in batches.
        wait_for(lambda: server.hlen("unacked") == N, timeout=5)

        def ack_from_threads(messages: list[Message]) -> None:
            threads = [
                threading.Thread(target=lambda part=p: [m.ack() for m in messages[part::8]])  # type: ignore[no-untyped-call]
                for p in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        ack_from_threads(held[: N // 4])
        wait_for(lambda: server.hlen("unacked") == N - N // 4, timeout=5)
        assert server.zcard("unacked_index") == N - N // 4
        # Acks still on their way when the channel closes go out before it restores
        # the messages it holds.
        ack_from_threads(held[N // 4 : N // 2])
        kept = {m.payload["i"] for m in held[N // 2 :]}
        queue.close()
    assert server.hlen("unacked") == 0 and server.zcard("unacked_index") == 0
    restored = {redis_payload(raw) for raw in server.lrange("batched", 0, -1)}
    assert restored == kept


def test_a_message_acked_before_its_record_went_out_is_never_recorded(
    redis_url: str,
) -> None:
    url = redis_url
    server = redis.Redis.from_url(url)
    with Connection(url, transport=TRANSPORT) as conn:  # type: ignore[no-untyped-call]
        queue = conn.SimpleQueue("quick")
        queue.put({"i": 1})
        qos = queue.consumer.channel.qos
        with qos._writing:  # the writer is busy: the record waits
            message = queue.get(timeout=5)
            message.ack()
        qos.flush()
        assert server.hlen("unacked") == 0 and server.zcard("unacked_index") == 0
        queue.close()
    assert server.llen("quick") == 0


def redis_payload(raw: bytes | str) -> int:
    import base64
    import json

    body = json.loads(raw)["body"]
    return int(json.loads(base64.b64decode(body))["i"])


def test_one_wake_up_takes_what_the_prefetch_allows_in_priority_order(redis_url: str) -> None:
    from kombu.entity import Exchange, Queue
    from kombu.messaging import Consumer

    names = ["io.high", "io.default", "io.low"]
    queues = [Queue(name, Exchange(name, "direct"), routing_key=name) for name in names]  # type: ignore[no-untyped-call]
    received: list[tuple[str, int]] = []
    with Connection(  # type: ignore[no-untyped-call]
        redis_url, transport=TRANSPORT, transport_options={"queue_order_strategy": "priority"}
    ) as conn:
        producer = conn.Producer()
        for name, queue in reversed(list(zip(names, queues, strict=True))):
            for i in range(10):
                producer.publish(
                    {"q": name, "i": i}, exchange=queue.exchange, routing_key=name, declare=[queue]
                )
        held: list[Message] = []

        def take(body: dict[str, object], message: Message) -> None:
            received.append((str(body["q"]), int(body["i"])))  # type: ignore[call-overload]
            held.append(message)

        with Consumer(conn, queues, callbacks=[take], prefetch_count=12):  # type: ignore[no-untyped-call]
            batches = []
            while len(received) < 30:
                before = len(received)
                conn.drain_events(timeout=5)  # one wake-up of the consumer
                batches.append(len(received) - before)
                for message in held:
                    message.ack()  # type: ignore[no-untyped-call]
                held.clear()
    # BRPOP's message and as many more as the prefetch leaves room for, not one per wake-up.
    # A first BRPOP that took over QUICK_BRPOP_SECONDS (a slow machine's first round trip)
    # looks like an idle queue and takes its message alone; the next wake-ups drain.
    assert batches in ([12, 12, 6], [1, 12, 12, 5]), batches
    assert received == [(name, i) for name in names for i in range(10)]
    assert redis.Redis.from_url(redis_url).hlen("unacked") == 0


def test_messages_taken_in_a_wake_up_but_not_handed_over_go_back_in_order(
    redis_url: str,
) -> None:
    server = redis.Redis.from_url(redis_url)
    seen: list[int] = []
    with Connection(redis_url, transport=TRANSPORT) as conn:  # type: ignore[no-untyped-call]
        queue = conn.SimpleQueue("drained")
        for i in range(10):
            queue.put({"i": i})

        def take(body: dict[str, int], message: Message) -> None:
            seen.append(body["i"])
            if body["i"] == 2:
                raise RuntimeError("the consumer failed")

        with conn.Consumer(queue.queue, callbacks=[take], prefetch_count=8):
            try:
                conn.drain_events(timeout=5)
            except RuntimeError:
                pass
            else:
                raise AssertionError("the callback's error was swallowed")
            assert seen == [0, 1, 2]
            # 3..7 were taken with them and not handed over: back, first out first.
            left = [redis_payload(raw) for raw in reversed(server.lrange("drained", 0, -1))]
            assert left == list(range(3, 10))
        queue.close()
    # Closing restores the three delivered ones from their records: none lost.
    everything = sorted(redis_payload(raw) for raw in server.lrange("drained", 0, -1))
    assert everything == list(range(10))


@contextlib.contextmanager
def drain_calls(server: redis.Redis) -> Iterator[list[str]]:
    """The drain script's calls on this database while the block runs, seen by MONITOR."""
    sha = hashlib.sha1(DRAIN_SCRIPT.encode()).hexdigest()
    db = int(server.connection_pool.connection_kwargs.get("db", 0))
    calls: list[str] = []
    end = f"end-of-watch-{uuid.uuid4().hex}"
    started = threading.Event()

    def watch() -> None:
        with server.monitor() as monitor:  # type: ignore[no-untyped-call]
            started.set()
            while True:
                command = monitor.next_command()
                if end in command["command"]:
                    return
                if command["db"] == db and command["command"].startswith(f"EVALSHA {sha}"):
                    calls.append(command["command"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started.wait(5)
    time.sleep(0.1)  # MONITOR is on before the block's first command
    try:
        yield calls
    finally:
        server.echo(end)
        watcher.join(5)


def test_a_wake_up_that_waited_for_its_message_does_not_look_for_more(redis_url: str) -> None:
    server = redis.Redis.from_url(redis_url)
    seen: list[int] = []
    with (
        Connection(redis_url, transport=TRANSPORT) as conn,  # type: ignore[no-untyped-call]
        Connection(redis_url, transport=TRANSPORT) as publisher,  # type: ignore[no-untyped-call]
    ):
        queue, sender = conn.SimpleQueue("trickle"), publisher.SimpleQueue("trickle")

        def take(body: dict[str, int], message: Message) -> None:
            seen.append(body["i"])
            message.ack()  # type: ignore[no-untyped-call]

        with conn.Consumer(queue.queue, callbacks=[take], prefetch_count=8):
            # One message at a time, each after the consumer began to wait: low load.
            with drain_calls(server) as trickle:
                for i in range(5):
                    later = threading.Timer(0.2, sender.put, args=({"i": i},))
                    later.start()
                    conn.drain_events(timeout=5)
                    later.join()
            # Five waiting at once: the wake-up that finds the first looks for the rest.
            with drain_calls(server) as burst:
                for i in range(5, 10):
                    sender.put({"i": i})
                conn.drain_events(timeout=5)
        sender.close()
        queue.close()
    assert trickle == [], trickle  # a drain per message would cost a round trip for nothing
    assert seen == list(range(10)) and len(burst) >= 1


# What Redis before 6.2 answers to RPOP with a count.
OLD_REDIS_DRAIN = "return redis.call('RPOP', KEYS[1], ARGV[1], 'count')"


def test_on_a_redis_that_refuses_the_drain_messages_come_one_per_wake_up_and_none_is_lost(
    redis_url: str,
) -> None:
    server = redis.Redis.from_url(redis_url)
    seen: list[int] = []
    with Connection(redis_url, transport=TRANSPORT) as conn:  # type: ignore[no-untyped-call]
        queue = conn.SimpleQueue("old")
        for i in range(10):
            queue.put({"i": i})

        def take(body: dict[str, int], message: Message) -> None:
            seen.append(body["i"])
            message.ack()  # type: ignore[no-untyped-call]

        channel = conn.default_channel
        channel._drain = server.register_script(OLD_REDIS_DRAIN)
        with conn.Consumer(queue.queue, callbacks=[take], prefetch_count=8):
            batches = []
            while len(seen) < 10:
                before = len(seen)
                conn.drain_events(timeout=5)
                batches.append(len(seen) - before)
        assert channel._drain is False  # refused once, then not asked again
        queue.close()
    assert batches == [1] * 10
    assert seen == list(range(10)) and server.llen("old") == 0
