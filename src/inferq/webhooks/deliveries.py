"""Webhook deliveries for worker threads (sync): arm, claim, record each attempt.

A delivery is `waiting` while its job runs, `pending` once the job has ended (then
`next_attempt_at` says when to try), and ends `delivered` or `failed`. Claims are
conditional UPDATEs, so any number of workers can sweep and still only one of them
sends a given attempt; the claim pushes `next_attempt_at` past the attempt's longest
possible duration, so a worker that dies mid-attempt only delays the retry.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from inferq.db.tables import jobs, webhook_attempts, webhook_deliveries, webhook_secrets
from inferq.jobs.schemas import TERMINAL_STATUSES, Job
from inferq.jobs.store import utcnow
from inferq.webhooks.rows import WAITING

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
# Deliveries one sweep arms at most: the rest wait for the next sweep.
ARM_BATCH = 500


def parse_schedule(spec: str) -> tuple[float, ...]:
    """`"0,5,300"` → the delay before each attempt, in seconds."""
    try:
        delays = tuple(float(part) for part in spec.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"webhook retry schedule {spec!r} is not a list of seconds") from exc
    if not delays or any(d < 0 for d in delays):
        raise ValueError(f"webhook retry schedule {spec!r} needs one or more delays >= 0")
    return delays


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds for one attempt."""

    id: str
    job_id: str
    key_id: str
    url: str
    attempts: int
    token: str


@dataclass(frozen=True)
class AttemptResult:
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    # No retry can help (the SSRF guard refused the URL, or there is nothing to send).
    final: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class DeliveryStore:
    def __init__(self, engine: sa.Engine, schedule: Sequence[float]) -> None:
        self.engine = engine
        self.schedule = tuple(schedule)

    def arm_job(self, job_id: str) -> bool:
        """The job ended: its waiting delivery becomes due."""
        statement = (
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.job_id == job_id, webhook_deliveries.c.status == WAITING)
            .values(status=PENDING, next_attempt_at=self._first_attempt_at())
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)

    def arm_ended(self) -> int:
        """Arm the waiting deliveries of every job that has ended (whoever ended it).

        Reads first and writes only when there is something to arm, so idle sweeps take
        no write lock (SQLite has one for the whole database).
        """
        query = (
            sa.select(webhook_deliveries.c.id)
            .join(jobs, jobs.c.id == webhook_deliveries.c.job_id)
            .where(webhook_deliveries.c.status == WAITING, jobs.c.status.in_(TERMINAL_STATUSES))
            .limit(ARM_BATCH)
        )
        with self.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        if not ids:
            return 0
        statement = (
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.id.in_(ids), webhook_deliveries.c.status == WAITING)
            .values(status=PENDING, next_attempt_at=self._first_attempt_at())
        )
        with self.engine.begin() as conn:
            return int(conn.execute(statement).rowcount)

    def claim_due(self, limit: int, lease_seconds: float) -> list[Claimed]:
        """Claim up to `limit` due deliveries for one attempt each."""
        now = utcnow()
        due = (
            sa.select(webhook_deliveries.c.id)
            .where(
                webhook_deliveries.c.status == PENDING,
                webhook_deliveries.c.next_attempt_at <= now,
            )
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            ids = list(conn.execute(due).scalars())
        claimed = (self._claim(i, now, now + timedelta(seconds=lease_seconds)) for i in ids)
        return [c for c in claimed if c is not None]

    def _claim(self, delivery_id: str, now: datetime, lease_until: datetime) -> Claimed | None:
        token = secrets.token_hex(16)
        d = webhook_deliveries.c
        statement = (
            sa.update(webhook_deliveries)
            .where(d.id == delivery_id, d.status == PENDING, d.next_attempt_at <= now)
            .values(next_attempt_at=lease_until, claim_token=token)
            .returning(d.id, d.job_id, d.key_id, d.url, d.attempts)
        )
        with self.engine.begin() as conn:
            row = conn.execute(statement).first()
        if row is None:
            return None
        return Claimed(row.id, row.job_id, row.key_id, row.url, row.attempts, token)

    def job(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(jobs.select().where(jobs.c.id == job_id)).first()
        return Job.from_row(row) if row else None

    def signing_secrets(self, key_id: str, grace_seconds: float) -> list[str]:
        """The key's secret, and its previous one while that is in its grace period."""
        query = sa.select(webhook_secrets).where(webhook_secrets.c.key_id == key_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return []
        found = [row.secret]
        grace_until = row.rotated_at and row.rotated_at + timedelta(seconds=grace_seconds)
        if row.previous_secret and grace_until and grace_until > utcnow():
            found.append(row.previous_secret)
        return found

    def record(self, claimed: Claimed, result: AttemptResult) -> bool:
        """Log the attempt and schedule the next one (or end the delivery).

        False if the claim was lost (its lease ran out and another worker took it).
        """
        number = claimed.attempts + 1
        values = self._outcome(number, result) | {
            "attempts": number,
            "claim_token": None,
            "last_status_code": result.status_code,
            "last_error": result.error,
        }
        d = webhook_deliveries.c
        update = (
            sa.update(webhook_deliveries)
            .where(d.id == claimed.id, d.claim_token == claimed.token)
            .values(**values)
        )
        with self.engine.begin() as conn:
            if not conn.execute(update).rowcount:
                return False
            conn.execute(
                webhook_attempts.insert().values(
                    delivery_id=claimed.id,
                    attempt=number,
                    started_at=result.started_at,
                    status_code=result.status_code,
                    error=result.error,
                    duration_ms=result.duration_ms,
                )
            )
        return True

    def _outcome(self, number: int, result: AttemptResult) -> dict[str, object]:
        now = utcnow()
        if result.ok:
            return {"status": DELIVERED, "finished_at": now, "next_attempt_at": None}
        if result.final or number >= len(self.schedule):
            return {"status": FAILED, "finished_at": now, "next_attempt_at": None}
        return {"next_attempt_at": now + timedelta(seconds=self.schedule[number])}

    def _first_attempt_at(self) -> datetime:
        return utcnow() + timedelta(seconds=self.schedule[0])
