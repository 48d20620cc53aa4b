"""The claim and the finish on psycopg directly: the same rows and the same errors as
through SQLAlchemy, and a lost connection leaves the pool."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from inferq.db.direct import usable
from inferq.db.engine import create_sync
from inferq.db.migrate import upgrade
from inferq.db.tables import api_keys, jobs
from inferq.jobs.claims import ClaimStore, Outcome
from inferq.jobs.store import utcnow
from tests.conftest import drop_postgres, fresh_postgres, postgres_url

pytestmark = pytest.mark.skipif(postgres_url() is None, reason="needs PostgreSQL")
OUTCOME = Outcome(
    status="succeeded", text="an answer", finish_reason="stop", prompt_tokens=3,
    completion_tokens=2, result={"tool_calls": [{"name": "f"}]}, served_model="sim",
    cost_usd=0.25,
)  # fmt: skip


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    admin = postgres_url()
    assert admin is not None
    url, name = fresh_postgres(admin)
    upgrade(url)
    engine = create_sync(url, pool_size=2)
    with engine.begin() as conn:
        conn.execute(api_keys.insert(), {"id": "k", "name": "k", "prefix": "k",
                                         "key_hash": "k", "created_at": utcnow()})  # fmt: skip
    try:
        yield engine
    finally:
        engine.dispose()
        drop_postgres(admin, name)


def _queued(engine: sa.Engine) -> str:
    job_id = str(uuid.uuid4())
    row: dict[str, Any] = {
        "id": job_id, "key_id": "k", "kind": "generate", "model": "sim",
        "priority": "normal", "status": "queued", "metadata": {"ref": "x"},
        "request": {"messages": [{"role": "user", "content": "hi"}]}, "created_at": utcnow(),
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(jobs.insert(), row)
    return job_id


def test_direct_claim_and_finish_return_what_sqlalchemy_returns(engine: sa.Engine) -> None:
    assert usable(engine, traced=False) and not usable(engine, traced=True)
    plain, direct = ClaimStore(engine), ClaimStore(engine, direct=True)
    a, b = _queued(engine), _queued(engine)
    claimed_a, claimed_b = plain.claim(a, "w"), direct.claim(b, "w")
    assert claimed_a is not None and claimed_b is not None
    same = {"id": a, "created_at": None}
    assert {**vars(claimed_b), **same} == {**vars(claimed_a), **same}
    assert claimed_b.created_at is not None and claimed_b.created_at.tzinfo is not None
    # A claim or finish that does not apply returns nothing, as through SQLAlchemy.
    assert direct.claim(b, "w") is None
    assert direct.finish(b, "someone-else", OUTCOME) is None

    ended_a, ended_b = plain.finish(a, "w", OUTCOME), direct.finish(b, "w", OUTCOME)
    assert ended_a is not None and ended_b is not None
    moments = ("id", "created_at", "started_at", "finished_at")
    assert ended_b.model_dump(exclude=set(moments)) == ended_a.model_dump(exclude=set(moments))
    assert ended_b.result == {"tool_calls": [{"name": "f"}]} and ended_b.cost_usd == 0.25
    with engine.connect() as conn:
        saved = conn.execute(sa.select(jobs).where(jobs.c.id == b)).one()
    assert (saved.status, saved.output_text, saved.cost_usd) == ("succeeded", "an answer", 0.25)


def test_direct_errors_are_sqlalchemys_and_a_lost_connection_is_replaced(
    engine: sa.Engine,
) -> None:
    store = ClaimStore(engine, direct=True)
    job_id = _queued(engine)
    assert store.claim(job_id, "w") is not None
    # A row the database refuses: what the worker's save turns into a failed job.
    with pytest.raises(sa.exc.StatementError) as refused:
        store.finish(job_id, "w", Outcome(status="succeeded", text="a\x00b"))
    assert isinstance(refused.value, sa.exc.DataError)
    assert "NUL" in str(refused.value).splitlines()[0]

    # The server ends every connection: the next statement fails as unreachable (what
    # the worker waits out), its connection leaves the pool, and the one after works.
    with psycopg.connect(str(engine.url.set(drivername="postgresql")), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with pytest.raises(sa.exc.OperationalError) as lost:
        store.finish(job_id, "w", OUTCOME)
    assert lost.value.connection_invalidated
    ended = store.finish(job_id, "w", OUTCOME)
    assert ended is not None and ended.status == "succeeded"
