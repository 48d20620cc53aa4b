"""The broker's acks-late bookkeeping per message: `python -m bench.probe acks`.

Consumes `--jobs` messages from a Redis queue with kombu's stock Redis transport and with
inferq's (`inferq.broker`), acking each from a pool of 64 threads as the worker's job
threads do, and prints the consuming process's CPU per message for both, alternating,
with the median ratio. That CPU sits on the worker's one core (the GIL) beside every job's
own work.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from kombu.connection import Connection

from inferq.broker import TRANSPORT

TRANSPORTS = {"kombu": "redis", "inferq": TRANSPORT}


def cpu_per_message(url: str, transport: str, count: int) -> float:
    """Microseconds of this process's CPU to receive and ack one message."""
    redis.Redis.from_url(url).flushdb()
    with (
        Connection(url, transport=transport) as conn,  # type: ignore[no-untyped-call]
        ThreadPoolExecutor(64) as acks,
    ):
        queue = conn.SimpleQueue("bench-acks")
        for i in range(count):
            queue.put({"i": i})
        start = time.process_time()
        pending = [acks.submit(queue.get(timeout=5).ack) for _ in range(count)]
        for done in pending:
            done.result()
        flush: Any = getattr(queue.consumer.channel.qos, "flush", None)
        if flush is not None:
            flush()  # inferq's writes what is still pending: count it
        spent = time.process_time() - start
        left = redis.Redis.from_url(url).hlen("unacked")
        queue.close()
    if left:
        raise RuntimeError(f"{transport}: {left} unacked records left after every ack")
    return spent / count * 1e6


def run(redis_base: str, count: int, rounds: int = 5) -> None:
    url = f"{redis_base}/15"
    times: dict[str, list[float]] = {name: [] for name in TRANSPORTS}
    for _ in range(rounds):
        for name, transport in TRANSPORTS.items():
            times[name].append(cpu_per_message(url, transport, count))
    medians = {name: statistics.median(v) for name, v in times.items()}
    for name, values in times.items():
        print(
            f"{name}: {medians[name]:.0f} µs CPU per message received and acked "
            f"(runs: {', '.join(f'{v:.0f}' for v in values)})"
        )
    print(f"ratio inferq / kombu: {medians['inferq'] / medians['kombu']:.2f}")
