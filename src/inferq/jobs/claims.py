"""Job persistence for worker threads (sync): claim, finish, and recover from dead workers.

Every transition is a conditional UPDATE, so a redelivered message, a reaper and a slow
worker can race and still at most one of them moves a job on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from inferq.conversations import Turn, add_turn
from inferq.db.direct import DirectStatement, Row
from inferq.db.tables import UTCDateTime, jobs
from inferq.jobs.schemas import Job
from inferq.jobs.store import utcnow
from inferq.providers.request import GenerationRequest


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    kind: str
    model: str
    priority: str
    attempts: int
    payload: dict[str, Any]
    batch_id: str | None = None
    key_id: str | None = None
    created_at: datetime | None = None
    # Deliveries to a worker so far, this one included.
    claims: int = 1
    # The submitting request's id (None for jobs made before it was kept).
    request_id: str | None = None

    @property
    def request(self) -> GenerationRequest:
        """The payload of a `generate` job."""
        return GenerationRequest(**self.payload)


@dataclass(frozen=True)
class Outcome:
    """How a job ended on a worker."""

    status: str
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    served_model: str | None = None
    cost_usd: float | None = None
    # Answered from the response cache: no provider call.
    cached: bool = False


def _bound(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(f"b_{name}", type_=jobs.c[name].type)


# The two statements every job runs, built once: constructing an UPDATE per call showed
# in profiles (a tenth of a worker's database time); values travel as bound parameters.
_CLAIM = (
    sa.update(jobs)
    .where(
        jobs.c.id == sa.bindparam("b_id"),
        jobs.c.status == "queued",
        jobs.c.cancel_requested.is_(False),
    )
    .values(
        status="running",
        worker_id=sa.bindparam("b_worker", type_=jobs.c.worker_id.type),
        attempts=jobs.c.attempts + 1,
        claims=jobs.c.claims + 1,
        started_at=sa.func.coalesce(jobs.c.started_at, sa.bindparam("b_now", type_=UTCDateTime())),
    )
    .returning(
        jobs.c.id,
        jobs.c.kind,
        jobs.c.model,
        jobs.c.priority,
        jobs.c.attempts,
        jobs.c.request,
        jobs.c.batch_id,
        jobs.c.key_id,
        jobs.c.created_at,
        jobs.c.claims,
        jobs.c.request_id,
    )
)
# (column, Outcome attribute) pairs the finish writes.
_OUTCOME_COLUMNS = (
    ("status", "status"),
    ("output_text", "text"),
    ("finish_reason", "finish_reason"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("error_type", "error_type"),
    ("error_message", "error_message"),
    ("result", "result"),
    ("served_model", "served_model"),
    ("cost_usd", "cost_usd"),
    ("cached", "cached"),
)
_FINISH = (
    sa.update(jobs)
    .where(
        jobs.c.id == sa.bindparam("b_id"),
        jobs.c.status == "running",
        jobs.c.worker_id == sa.bindparam("b_worker"),
    )
    .values(
        finished_at=sa.bindparam("b_now", type_=UTCDateTime()),
        **{name: _bound(name) for name, _ in _OUTCOME_COLUMNS},
    )
    .returning(*jobs.c)
)


def _claimed(row: sa.Row[Any] | Row) -> ClaimedJob:
    return ClaimedJob(
        row.id,
        row.kind,
        row.model,
        row.priority,
        row.attempts,
        row.request,
        row.batch_id,
        key_id=row.key_id,
        created_at=row.created_at,
        claims=row.claims,
        request_id=row.request_id,
    )


class ClaimStore:
    """With `direct`, the claim and the plain finish run on the driver
    (`inferq.db.direct`: PostgreSQL through psycopg, statements not traced)."""

    def __init__(self, engine: sa.Engine, direct: bool = False) -> None:
        self.engine = engine
        # Claim and finish are one statement each: autocommit saves a BEGIN and a COMMIT
        # round trip per statement (two of the four database round trips of a job).
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._direct = (
            {statement: DirectStatement(engine, statement) for statement in (_CLAIM, _FINISH)}
            if direct
            else {}
        )

    def _first(self, statement: Any, values: dict[str, Any]) -> Any:
        """The first row `statement` returns, in autocommit."""
        direct = self._direct.get(statement)
        if direct is not None:
            return direct.first(values)
        with self.autocommit.connect() as conn:
            return conn.execute(statement, values).first()

    def claim(self, job_id: str, worker_id: str) -> ClaimedJob | None:
        """queued → running for this worker; None if someone else has (or had) it."""
        values = {"b_id": job_id, "b_worker": worker_id, "b_now": utcnow()}
        row = self._first(_CLAIM, values)
        return _claimed(row) if row is not None else None

    def held(self, job_id: str, worker_id: str) -> ClaimedJob | None:
        """The job if it is running under `worker_id`: a claim that committed although
        its answer was lost with the connection."""
        query = sa.select(jobs).where(
            jobs.c.id == job_id, jobs.c.status == "running", jobs.c.worker_id == worker_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _claimed(row) if row is not None else None

    def ended_by(self, job_id: str, worker_id: str) -> Job | None:
        """The job if `worker_id` ended it: a finish that committed although its answer
        was lost with the connection."""
        query = sa.select(jobs).where(
            jobs.c.id == job_id,
            jobs.c.status.not_in(("queued", "running")),
            jobs.c.worker_id == worker_id,
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return Job.from_row(row) if row is not None else None

    def handed_back(self, job_id: str, worker_id: str) -> Job | None:
        """The job if it is queued, or if `worker_id` ended it: a `recover` that committed
        although its answer was lost with the connection. A queued job is published again
        whoever queued it: its claim lets one of the messages through."""
        query = sa.select(jobs).where(
            jobs.c.id == job_id,
            sa.or_(
                jobs.c.status == "queued",
                sa.and_(jobs.c.status != "running", jobs.c.worker_id == worker_id),
            ),
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return Job.from_row(row) if row is not None else None

    def finish(
        self, job_id: str, worker_id: str, outcome: Outcome, turn: Turn | None = None
    ) -> Job | None:
        """running → terminal, only for the worker that holds the claim; with `turn`, the
        conversation's new messages in the same transaction."""
        now = utcnow()
        values = {
            "b_id": job_id,
            "b_worker": worker_id,
            "b_now": now,
            **{f"b_{name}": getattr(outcome, attr) for name, attr in _OUTCOME_COLUMNS},
        }
        if turn is None:
            row = self._first(_FINISH, values)
        else:
            with self.engine.begin() as conn:
                row = conn.execute(_FINISH, values).first()
                if row is not None:
                    add_turn(conn, turn, job_id, now)
        return Job.from_row(row) if row else None

    def add_attempt(self, job_id: str) -> None:
        """Count one more provider attempt (a retry or a fallback) on the job."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id).values(attempts=jobs.c.attempts + 1)
            )

    def running_workers(self) -> list[str]:
        """The workers that hold running jobs (a handful of rows, however many jobs)."""
        query = (
            sa.select(jobs.c.worker_id)
            .where(jobs.c.status == "running", jobs.c.worker_id.is_not(None))
            .distinct()
        )
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def running(self, workers: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """(job id, worker id) of every running job, or of those of `workers`."""
        query = sa.select(jobs.c.id, jobs.c.worker_id).where(jobs.c.status == "running")
        if workers is not None:
            query = query.where(jobs.c.worker_id.in_(workers))
        with self.engine.connect() as conn:
            return [(r.id, r.worker_id) for r in conn.execute(query)]

    def recover(
        self, job_id: str, worker_id: str, max_claims: int, why: str = "the worker died"
    ) -> Job | None:
        """A dead worker's job: back to queued, or ended if cancelled or out of attempts.
        `why` says what ended each run, in the error of a job out of attempts.

        Returns the job as it now is, or None if it had already moved on.
        """
        base = sa.update(jobs).where(
            jobs.c.id == job_id, jobs.c.status == "running", jobs.c.worker_id == worker_id
        )
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(jobs.c.claims, jobs.c.cancel_requested).where(jobs.c.id == job_id)
            ).first()
            if row is None:
                return None
            if row.cancel_requested:
                values: dict[str, Any] = {
                    "status": "cancelled",
                    "finish_reason": "cancelled",
                    "finished_at": utcnow(),
                }
            elif row.claims >= max_claims:
                values = {
                    "status": "failed",
                    "error_type": "worker_lost",
                    "finished_at": utcnow(),
                    "error_message": f"{why} {row.claims} times running this job",
                }
            else:
                values = {"status": "queued", "worker_id": None}
            updated = conn.execute(base.values(**values).returning(*jobs.c)).first()
        return Job.from_row(updated) if updated else None
