"""Batches survive crashes: a killed worker, a restarted API, a fan-out or a final step
that died halfway. Every line ends up exactly once in the output or the error file."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
import sqlalchemy as sa

from inferq.batches import fanout, queries
from inferq.batches.fanout import FanOut
from inferq.batches.lines import LineParser
from inferq.batches.runner import BatchRunner
from inferq.config import Settings
from inferq.db.engine import create_sync
from inferq.db.tables import batches, files, jobs
from inferq.providers.registry import ModelRegistry
from inferq.queue import enqueue, make_celery
from tests.batch_support import (
    by_custom_id,
    chat_line,
    result_lines,
    sdk_for,
    start_batch,
    wait_batch,
)
from tests.conftest import TESTS, RedisDatabases, Service, start_service, wait_for

DEAD_WORKER = "gone:1:dead"  # a worker id with no alive key, as after kill -9


@pytest.fixture(scope="module")
def api_only(
    tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDatabases
) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("batch-recovery")
    svc = start_service(
        tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db.sqlite'}", workers=()
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def bare(api_only: Service) -> Iterator[Service]:
    """The API with no worker: each test starts (and kills) its own, stopped after it."""
    yield api_only
    for worker in api_only.workers:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)


@pytest.fixture(scope="module")
def engine(api_only: Service) -> Iterator[sa.Engine]:
    db = create_sync(api_only.database_url)
    try:
        yield db
    finally:
        db.dispose()


def restart_api(service: Service) -> None:
    api = next(p for p in service.processes if p.args[-1] == "api" and p.poll() is None)  # type: ignore[index]
    api.terminate()
    api.wait(timeout=15)
    service.start_api()


def completed(sdk: openai.OpenAI, batch_id: str) -> int:
    counts = sdk.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def assert_each_line_once(sdk: openai.OpenAI, batch_id: str, custom_ids: list[str]) -> None:
    done = wait_batch(sdk, batch_id, timeout=90)
    assert done.status == "completed", done
    output = by_custom_id(result_lines(sdk, done.output_file_id))
    errors = by_custom_id(result_lines(sdk, done.error_file_id))
    assert not set(output) & set(errors)
    assert sorted([*output, *errors]) == sorted(custom_ids)
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {
        "total": len(custom_ids),
        "completed": len(output),
        "failed": len(errors),
    }


def job_count(engine: sa.Engine, batch_id: str) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(jobs.c.batch_id == batch_id)
        return int(conn.execute(query).scalar_one())


def test_batch_survives_a_killed_worker_and_a_restarted_api(
    bare: Service, engine: sa.Engine
) -> None:
    victim = bare.start_worker("io", 8)
    sdk = sdk_for(bare)
    custom_ids = [f"r-{i:02d}" for i in range(60)]
    batch = start_batch(sdk, [chat_line(c, model="sim-batch", text=c) for c in custom_ids])
    wait_for(lambda: completed(sdk, batch.id) >= 8, timeout=30)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    restart_api(bare)
    sdk = sdk_for(bare)
    stalled = sdk.batches.retrieve(batch.id)
    assert stalled.status == "in_progress" and completed(sdk, batch.id) < 60
    bare.start_worker("io", 8)
    assert_each_line_once(sdk, batch.id, custom_ids)
    assert job_count(engine, batch.id) == 60


def test_fan_out_that_died_halfway_is_finished_without_duplicate_jobs(
    bare: Service, engine: sa.Engine
) -> None:
    sdk = sdk_for(bare)
    custom_ids = [f"f-{i:02d}" for i in range(30)]
    batch = start_batch(sdk, [chat_line(c, text=c) for c in custom_ids])
    # A worker takes the batch, queues its first 10 jobs and dies (it never lets go).
    settings = Settings(redis_url=bare.redis_url, database_url=bare.database_url)
    parser = LineParser(ModelRegistry.load(TESTS / "models.yaml"), settings)
    celery = make_celery(settings)
    doomed = FanOut(engine, celery, parser, DEAD_WORKER)
    assert doomed.claim(batch.id)
    with engine.connect() as conn:
        row = conn.execute(queries.batch_by_id(batch.id)).one()
    lines = parser.parse(sdk.files.content(batch.input_file_id).content).lines
    for job_id, pool in doomed.insert_chunk(row, lines[:10]) or []:
        enqueue(celery, job_id, pool, "low")
    assert sdk.batches.retrieve(batch.id).status == "validating"

    bare.start_worker("io", 8)
    assert_each_line_once(sdk, batch.id, custom_ids)
    assert job_count(engine, batch.id) == 30


def test_final_step_that_died_halfway_is_done_again(bare: Service, engine: sa.Engine) -> None:
    bare.start_worker("io", 8)
    sdk = sdk_for(bare)
    custom_ids = [f"z-{i:02d}" for i in range(12)]
    lines = [
        chat_line(c, model="sim-fail" if i % 4 == 0 else "sim") for i, c in enumerate(custom_ids)
    ]
    first = wait_batch(sdk, start_batch(sdk, lines).id)
    assert first.status == "completed" and first.output_file_id and first.error_file_id
    # The state a worker leaves when it dies while writing the results: the files and the
    # final status are one transaction, so there is neither.
    with engine.begin() as conn:
        conn.execute(
            files.delete().where(files.c.id.in_([first.output_file_id, first.error_file_id]))
        )
        conn.execute(
            batches.update()
            .where(batches.c.id == first.id)
            .values(
                status="finalizing",
                worker_id=DEAD_WORKER,
                output_file_id=None,
                error_file_id=None,
                completed_at=None,
            )
        )
    assert sdk.batches.retrieve(first.id).status == "finalizing"
    assert_each_line_once(sdk, first.id, custom_ids)
    again = sdk.batches.retrieve(first.id)
    assert again.output_file_id not in (None, first.output_file_id)
    assert len(result_lines(sdk, again.error_file_id)) == 3


def test_jobs_whose_messages_were_lost_are_published_again(
    bare: Service, engine: sa.Engine, redis_url: str
) -> None:
    sdk = sdk_for(bare)
    custom_ids = [f"m-{i:02d}" for i in range(20)]
    batch = start_batch(sdk, [chat_line(c, text=c) for c in custom_ids])
    # Fan the batch out with messages sent to a broker no worker reads: the jobs are
    # queued in the database and their messages are gone, as when a worker took them
    # and was killed before it claimed them.
    settings = Settings(redis_url=redis_url, database_url=bare.database_url)
    parser = LineParser(ModelRegistry.load(TESTS / "models.yaml"), settings)
    with engine.connect() as conn:
        row = conn.execute(queries.batch_by_id(batch.id)).one()
    FanOut(engine, make_celery(settings), parser, DEAD_WORKER).run(row)
    assert sdk.batches.retrieve(batch.id).status == "in_progress"

    bare.start_worker("io", 8)
    assert_each_line_once(sdk, batch.id, custom_ids)
    assert job_count(engine, batch.id) == 20


def test_batch_past_its_window_expires_keeping_what_finished(
    bare: Service, engine: sa.Engine
) -> None:
    bare.start_worker("io", 4)
    sdk = sdk_for(bare)
    fast = [chat_line(f"fast-{i}", max_tokens=4) for i in range(2)]
    slow = [chat_line(f"slow-{i}", model="sim-slow", text=f"s{i}") for i in range(8)]
    batch = start_batch(sdk, fast + slow)
    wait_for(lambda: completed(sdk, batch.id) >= 2, timeout=30)
    with engine.begin() as conn:
        past = batches.c.created_at  # created before now: the window is over
        conn.execute(batches.update().where(batches.c.id == batch.id).values(expires_at=past))

    done = wait_batch(sdk, batch.id, timeout=30)
    assert done.status == "expired" and done.expired_at, done
    output = by_custom_id(result_lines(sdk, done.output_file_id))
    errors = by_custom_id(result_lines(sdk, done.error_file_id))
    # What finished before the expiry is kept; the rest (queued, or stopped mid-answer)
    # is reported as expired.
    assert {"fast-0", "fast-1"} <= set(output) and errors
    assert sorted([*output, *errors]) == sorted(line["custom_id"] for line in fast + slow)
    assert {line["error"]["code"] for line in errors.values()} == {"batch_expired"}
    assert all(line["response"] is None for line in errors.values())
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {
        "total": 10,
        "completed": len(output),
        "failed": len(errors),
    }


def test_a_fan_out_the_database_refuses_halfway_fails_the_batch_and_cancels_its_jobs(
    bare: Service, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal of the rows themselves (not an outage) would fail every pass again: the
    batch stayed validating for good. Now it fails, saying why, and the jobs of the
    chunks already in are cancelled."""
    sdk = sdk_for(bare)
    batch = start_batch(sdk, [chat_line(f"r-{i:02d}") for i in range(25)])
    settings = Settings(redis_url=bare.redis_url, database_url=bare.database_url)
    runner = BatchRunner(
        engine,
        redis.Redis.from_url(bare.redis_url),
        make_celery(settings),
        ModelRegistry.load(TESTS / "models.yaml"),
        settings,
        DEAD_WORKER,
    )
    monkeypatch.setattr(fanout, "CHUNK", 10)
    insert = runner.fanout.insert_chunk
    chunks: list[int] = []

    def second_refused(row: Any, chunk: Any) -> list[tuple[str, str]] | None:
        chunks.append(len(chunk))
        if len(chunks) == 2:
            raise sa.exc.DataError("INSERT ...", {}, ValueError("value refused"))
        return insert(row, chunk)

    monkeypatch.setattr(runner.fanout, "insert_chunk", second_refused)
    runner.advance(batch.id)

    done = sdk.batches.retrieve(batch.id)
    assert done.status == "failed", done
    assert done.errors is not None and done.errors.data is not None
    [error] = done.errors.data
    assert error.code == "database_refused" and "value refused" in (error.message or "")
    assert "INSERT" not in (error.message or "")
    assert chunks == [10, 10] and job_count(engine, batch.id) == 10
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(jobs.c.status).where(jobs.c.batch_id == batch.id))
        assert set(statuses.scalars()) == {"cancelled"}
    runner.advance(batch.id)  # a later pass leaves it as it is
    assert sdk.batches.retrieve(batch.id).status == "failed"
