"""Celery's threads pool with every thread started up front, and an event loop that
wakes every second.

Celery's pool (a `ThreadPoolExecutor`) starts a thread only when every existing one is
busy, and keeps it. A worker's memory then climbs in steps through its first busy spell,
when a backlog first fills every slot, and a process that looks settled after an hour
can still grow by a fifth. Started at once, the threads put the worker at its working
size before it takes a job: its memory is bounded by its concurrency from the start,
as with a prefork pool.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.concurrency.thread import TaskPool

log = logging.getLogger(__name__)
WAKE_SECONDS = 1.0


def _tick() -> None:
    """Nothing: waking the event loop is the point."""


class PrestartedThreadPool(TaskPool):  # type: ignore[misc]
    def on_start(self) -> None:
        super().on_start()
        started = prestart(self.executor, self.limit)
        log.info("thread pool: %d threads started", started)

    def register_with_event_loop(self, loop: Any) -> None:
        # A stop signal only sets a flag, which the worker reads when its event loop
        # wakes. Redis's transport wakes it every second (BRPOP's timeout); with AMQP
        # and no messages it slept up to 10 s (kombu's longest timer wait), and an idle
        # worker took that long to stop. A tick bounds that to a second.
        loop.call_repeatedly(WAKE_SECONDS, _tick)


def prestart(executor: Any, count: int, timeout: float = 30.0) -> int:
    """Start `count` threads in `executor`; returns how many it holds.

    Each submitted task waits at a barrier, so no thread is idle when the next is
    submitted and the executor starts a new one every time, up to its maximum.
    """
    barrier = threading.Barrier(count + 1)
    for _ in range(count):
        executor.submit(barrier.wait, timeout)
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        log.warning("thread pool: not every thread started within %.0f s", timeout)
    return len(getattr(executor, "_threads", ()))
