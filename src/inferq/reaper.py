"""Finds jobs whose worker died (its alive key expired) and requeues or ends them.

Celery on Redis would only redeliver such a message after the visibility timeout (hours);
this brings the job back in seconds. The claim's conditional update keeps the eventual
redelivery of the old message from running the job a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from inferq import redis_keys
from inferq.jobs.claims import ClaimStore
from inferq.jobs.outage import UNREACHABLE
from inferq.jobs.schemas import Job
from inferq.sweeps import LockedSweep

log = logging.getLogger(__name__)


class Reaper(LockedSweep):
    lock = redis_keys.REAPER_LOCK
    what = "reaper sweep"

    def __init__(
        self,
        store: ClaimStore,
        client: redis.Redis,
        max_attempts: int,
        interval_seconds: float,
        requeue: Callable[[Job], None],
        ended: Callable[[Job], None],
        orphans: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(client, interval_seconds)
        self.store = store
        self.max_attempts = max_attempts
        self.requeue = requeue
        self.ended = ended
        self.orphans = orphans

    def run_pass(self) -> int:
        """Jobs of dead workers requeued or ended, then lost messages published again."""
        moved = self._recover_dead_workers()
        if self.orphans is not None:
            moved += self.orphans()
        return moved

    def _recover_dead_workers(self) -> int:
        # Workers first, jobs only of dead ones: a sweep under a thousand running jobs
        # reads a few rows, not a thousand, every interval.
        workers = self.store.running_workers()
        if not workers:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for worker_id in workers:
            pipe.exists(redis_keys.worker_alive(worker_id))
        dead = [w for w, present in zip(workers, pipe.execute(), strict=True) if not present]
        if not dead:
            return 0
        moved = 0
        for job_id, worker_id in self.store.running(dead):
            job = self._recover(job_id, worker_id)
            if job is None:
                continue
            moved += 1
            log.warning("job %s lost its worker %s: now %s", job_id, worker_id, job.status)
            if job.status == "queued":
                self.requeue(job)
            else:
                self.ended(job)
        return moved

    def _recover(self, job_id: str, worker_id: str) -> Job | None:
        try:
            return self.store.recover(job_id, worker_id, self.max_attempts)
        except UNREACHABLE:
            # The update may have committed before its connection broke: a job left
            # queued with no message, or ended with no terminal event, would not be seen
            # running by the next pass. Read it back (this raises while the database is
            # away, and the pass ends there as before).
            job = self.store.handed_back(job_id, worker_id)
            if job is None:
                raise
            return job
