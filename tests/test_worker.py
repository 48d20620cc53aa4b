"""Workers: priority order, crash recovery after kill -9, redelivery never reruns a job."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from inferq.config import Settings
from inferq.jobs.claims import ClaimStore
from inferq.jobs.schemas import Job
from inferq.queue import enqueue, make_celery
from inferq.worker import Handler, JobRunner
from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import RedisDatabases, Service, start_service, wait_for


def test_high_priority_job_overtakes_queued_low_ones(service: Service) -> None:
    with service.client() as client:
        busy = submit(client, model="gemma-3-270m", prompt="Write a long story.", max_tokens=120)
        wait_for(lambda: client.get(f"/v1/jobs/{busy['id']}").json()["status"] == "running")
        lows = [
            submit(client, model="gemma-3-270m", prompt=f"Low {i}", max_tokens=4, priority="low")
            for i in range(5)
        ]
        high = submit(client, model="gemma-3-270m", prompt="High", max_tokens=4, priority="high")
        finished = {j["id"]: wait_terminal(client, j["id"]) for j in [busy, *lows, high]}
    assert all(j["status"] == "succeeded" for j in finished.values())
    high_end = finished[high["id"]]["finished_at"]
    assert all(high_end < finished[low["id"]]["finished_at"] for low in lows)


@pytest.fixture
def bare_service(tmp_path: Path, redis_dbs: RedisDatabases) -> Iterator[Service]:
    """A service with no workers: the test starts and kills them."""
    svc = start_service(
        tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db.sqlite'}", workers=()
    )
    try:
        yield svc
    finally:
        svc.stop()


def completions(service: Service) -> list[dict[str, object]]:
    if not service.sim_record.exists():
        return []
    return [json.loads(line) for line in service.sim_record.read_text().splitlines() if line]


def test_job_of_a_worker_killed_mid_run_completes_once_on_a_new_worker(
    bare_service: Service,
) -> None:
    victim = bare_service.start_worker("io", 4)
    with bare_service.client() as client:
        client.headers["X-Request-ID"] = "crash-survivor-1"
        job = submit(client, model="sim-slow", prompt="survive a crash")
        wait_for(
            lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", timeout=30
        )
        wait_for(lambda: bare_service.redis_stream_length(job["id"]) >= 3, timeout=10)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert completions(bare_service) == []
        bare_service.start_worker("io", 4)
        final = wait_terminal(client, job["id"], timeout=60)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    assert len(final["output"]["text"].split()) == 60
    assert len(completions(bare_service)) == 1
    # The reaper's message carries no request id: the new worker reads it from the row.
    rescuer = bare_service.root / "worker-io-1.log"
    lines = [json.loads(x) for x in rescuer.read_text().splitlines() if x.startswith("{")]
    finished = [e for e in lines if e.get("event") == "job.finished"]
    assert [e["request_id"] for e in finished] == ["crash-survivor-1"], finished


def test_redelivered_message_of_a_finished_job_does_not_run_it_again(
    bare_service: Service,
) -> None:
    bare_service.start_worker("io", 4)
    with bare_service.client() as client:
        job = submit(client, model="sim-slow", prompt="only once", max_tokens=8)
        first = wait_terminal(client, job["id"])
        app = make_celery(Settings(redis_url=bare_service.redis_url))
        enqueue(app, job["id"], "io", "high")  # what the broker does after a lost ack
        wait_for(lambda: bare_service.queue_is_empty(), timeout=10)
        again = client.get(f"/v1/jobs/{job['id']}").json()
    assert again == first
    assert len(completions(bare_service)) == 1


def test_worker_starts_every_thread_of_its_pool_before_any_job(bare_service: Service) -> None:
    worker = bare_service.start_worker("io", 40)
    threads = Path(f"/proc/{worker.pid}/task")
    # No job is sent: a pool that starts threads on demand would stay far below 40.
    wait_for(lambda: len(list(threads.iterdir())) >= 40, timeout=30)
    # The pool logs once its last thread is up: a moment after the count is reached.
    wait_for(lambda: "thread pool: 40 threads started" in bare_service.logs(), timeout=10)


def test_sigterm_lets_the_worker_finish_its_job_then_exit(bare_service: Service) -> None:
    worker = bare_service.start_worker("io", 4)
    with bare_service.client() as client:
        job = submit(client, model="sim-slow", prompt="finish me")
        wait_for(
            lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", timeout=30
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "succeeded" and final["attempts"] == 1
    assert len(final["output"]["text"].split()) == 60


def test_job_that_keeps_losing_its_worker_ends_failed(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    svc = start_service(
        tmp_path,
        redis_dbs.allocate(),
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        workers=(),
        extra_env={"INFERQ_MAX_ATTEMPTS": "1"},
    )
    try:
        victim = svc.start_worker("io", 4)
        with svc.client() as client:
            job = submit(client, model="sim-slow", prompt="doomed")
            wait_for(
                lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running",
                timeout=30,
            )
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            svc.start_worker("io", 4)
            final = wait_terminal(client, job["id"], timeout=60)
    finally:
        svc.stop()
    assert final["status"] == "failed"
    assert final["error"]["type"] == "worker_lost"


@contextlib.contextmanager
def runner_in_process(service: Service, handler: Handler) -> Iterator[JobRunner]:
    """A job runner in the test's process (no Celery consumer): the test calls `run`."""
    from inferq.liveness import Liveness
    from inferq.worker import build_context

    settings = Settings(
        database_url=service.database_url,
        redis_url=service.redis_url,
        models_file=service.env["INFERQ_MODELS_FILE"],
    )
    ctx = build_context(settings, "io", 4)
    try:
        yield JobRunner(ctx, Liveness(ctx.redis, ctx.worker_id, 10, 1), {"generate": handler})
    finally:
        ctx.engine.dispose()


def test_redis_failing_under_a_job_hands_it_back_to_the_queue(bare_service: Service) -> None:
    import redis

    from inferq.jobs.claims import Outcome
    from inferq.queue import pool_queues

    calls: list[str] = []

    def flaky(claimed, writer, stop):  # type: ignore[no-untyped-def]
        calls.append(claimed.id)
        if len(calls) == 1:
            raise redis.ConnectionError("Connection closed by server.")
        return Outcome("succeeded", "fine", finish_reason="stop", served_model=claimed.model)

    with runner_in_process(bare_service, flaky) as runner, bare_service.client() as client:
        job = submit(client, model="sim", prompt="survives a Redis blip")
        queue = redis.Redis.from_url(bare_service.redis_url)
        assert sum(queue.llen(q) for q in pool_queues("io")) == 1
        runner.run(job["id"])
        requeued = client.get(f"/v1/jobs/{job['id']}").json()
        assert requeued["status"] == "queued"  # not failed: the job did nothing wrong
        assert sum(queue.llen(q) for q in pool_queues("io")) == 2  # published again
        runner.run(job["id"])
        final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "succeeded" and final["output"]["text"] == "fine"
    assert final["attempts"] == 2 and calls == [job["id"], job["id"]]


def lose_first_recover_answer(store: ClaimStore, tries: list[str]) -> None:
    """`store.recover`'s first update commits, then its answer is lost with the
    connection; `tries` gets the status each call returned ("none" for None)."""
    import sqlalchemy as sa

    recover = store.recover

    def committed_then_lost(job_id: str, worker_id: str, *more: Any, **named: Any) -> Job | None:
        job = recover(job_id, worker_id, *more, **named)
        tries.append(job.status if job else "none")
        if len(tries) == 1:
            raise sa.exc.OperationalError("UPDATE jobs", {}, Exception("connection reset"))
        return job

    store.recover = committed_then_lost  # type: ignore[method-assign]


def test_a_hand_back_whose_answer_was_lost_still_publishes_the_job_again(
    bare_service: Service,
) -> None:
    import redis

    from inferq.queue import pool_queues

    def flaky(claimed, writer, stop):  # type: ignore[no-untyped-def]
        raise redis.ConnectionError("Connection closed by server.")

    tries: list[str] = []
    with runner_in_process(bare_service, flaky) as runner, bare_service.client() as client:
        lose_first_recover_answer(runner.store, tries)
        job = submit(client, model="sim", prompt="handed back twice")
        queue = redis.Redis.from_url(bare_service.redis_url)
        runner.run(job["id"])
        requeued = client.get(f"/v1/jobs/{job['id']}").json()
    assert tries == ["queued", "none"]  # the second try found it queued already
    assert requeued["status"] == "queued"
    assert sum(queue.llen(q) for q in pool_queues("io")) == 2  # published again at once


def test_a_reaper_whose_recover_lost_its_answer_still_requeues_the_job(
    bare_service: Service,
) -> None:
    from inferq.db.engine import create_sync
    from inferq.reaper import Reaper

    engine = create_sync(bare_service.database_url)
    store = ClaimStore(engine)
    tries: list[str] = []
    lose_first_recover_answer(store, tries)
    requeued: list[str] = []
    reaper = Reaper(
        store,
        redis.Redis.from_url(bare_service.redis_url),
        3,
        1,
        requeue=lambda job: requeued.append(job.status),
        ended=lambda job: None,
    )
    with bare_service.client() as client:
        job = submit(client, model="sim", prompt="its worker died")
        assert store.claim(job["id"], "gone:1:dead") is not None  # no alive key: dead
        assert reaper.sweep() == 1
        # At once again: the first sweep's lock holds, so this one does not run (and its
        # loop does not take it as a sign that the database answers).
        assert reaper.sweep() is None
        now = client.get(f"/v1/jobs/{job['id']}").json()
    engine.dispose()
    assert tries == ["queued"]  # one update, read back after its answer was lost
    assert requeued == ["queued"] and now["status"] == "queued"


def test_job_cancelled_in_the_queue_is_counted_and_logged_as_finished(
    bare_service: Service,
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with bare_service.client() as client:
        job = submit(client, model="sim", prompt="never runs")
        assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        scraped = client.get("/metrics").text
    finished = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "inferq_jobs_finished_total" and sample.labels["model"] == "sim"
    }
    assert finished == {"cancelled": 1.0}
    lines = [
        json.loads(line)
        for line in (bare_service.root / "api.log").read_text().splitlines()
        if line.startswith("{")
    ]
    ended = [line for line in lines if line.get("event") == "job.finished"]
    assert [(e["job_id"], e["outcome"]) for e in ended] == [(job["id"], "cancelled")]


def test_a_running_jobs_message_is_held_unacked_until_the_job_ends(bare_service: Service) -> None:
    # The broker's record of a delivered message is what a warm shutdown restores from,
    # and the ack must remove it: inferq writes both in batches (inferq.broker).
    bare_service.start_worker("io", 4)
    broker = redis.Redis.from_url(bare_service.redis_url)
    with bare_service.client() as client:
        job = submit(client, model="sim-slow", prompt="held while it runs")
        wait_for(
            lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", timeout=30
        )
        wait_for(lambda: broker.hlen("unacked") == 1, timeout=5)
        (record,) = cast(list[bytes], broker.hvals("unacked"))  # a client that does not decode
        assert job["id"] in record.decode()
        assert broker.zcard("unacked_index") == 1
        assert wait_terminal(client, job["id"])["status"] == "succeeded"
    wait_for(lambda: broker.hlen("unacked") == 0 and broker.zcard("unacked_index") == 0, timeout=5)


def test_a_job_handed_back_until_out_of_attempts_says_why(bare_service: Service) -> None:
    import redis

    def broken(claimed, writer, stop):  # type: ignore[no-untyped-def]
        raise redis.ConnectionError("Connection closed by server.")

    with runner_in_process(bare_service, broken) as runner, bare_service.client() as client:
        job = submit(client, model="sim", prompt="never gets through")
        for _ in range(3):
            runner.run(job["id"])
        final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "failed" and final["attempts"] == 3, final
    # Not "the worker died": it did not, and the operator would look in the wrong place.
    assert final["error"]["message"] == (
        "Redis or the database failed under the job 3 times running this job"
    )
