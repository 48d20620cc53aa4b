"""The broker's acks-late bookkeeping, written in batches (inferq.broker), against Redis."""

from __future__ import annotations

import threading

import redis
from kombu import Connection
from kombu.message import Message

from inferq.broker import TRANSPORT
from tests.conftest import wait_for

N = 400


def test_records_and_acks_from_many_threads_add_up_and_a_close_restores_the_rest(
    redis_url: str,
) -> None:
    url = redis_url
    server = redis.Redis.from_url(url)
    with Connection(url, transport=TRANSPORT) as conn:
        queue = conn.SimpleQueue("batched")
        for i in range(N):
            queue.put({"i": i})
        held = [queue.get(timeout=5) for _ in range(N)]
        assert server.llen("batched") == 0
        # Every delivered message gets its record, written in batches.
        wait_for(lambda: server.hlen("unacked") == N, timeout=5)

        def ack_from_threads(messages: list[Message]) -> None:
            threads = [
                threading.Thread(target=lambda part=p: [m.ack() for m in messages[part::8]])
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
    with Connection(url, transport=TRANSPORT) as conn:
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


def redis_payload(raw: bytes) -> int:
    import base64
    import json

    body = json.loads(raw)["body"]
    return int(json.loads(base64.b64decode(body))["i"])
