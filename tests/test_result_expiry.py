"""Result expiry: a finished job's request and answer are deleted after the retention."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import redis
import sqlalchemy as sa

from inferq import redis_keys
from inferq.db.engine import sync_url
from inferq.db.migrate import upgrade
from inferq.db.tables import api_keys, batches, jobs, webhook_deliveries
from inferq.jobs.expiry import CHUNK, ResultExpiry
from inferq.jobs.store import utcnow
from tests.conftest import RedisDatabases, free_port, start_service, wait_for

HOUR = 3600


def _job(job_id: str, finished_ago: float | None, **fields: Any) -> dict[str, Any]:
    now = utcnow()
    row = {
        "id": job_id, "key_id": "k", "model": "sim", "priority": "normal",
        "status": "succeeded", "request": {"messages": [{"role": "user", "content": "hi"}]},
        "metadata": {"ref": job_id}, "output_text": "an answer", "finish_reason": "stop",
        "prompt_tokens": 3, "completion_tokens": 2, "result": {"extra": 1},
        "batch_id": None, "error_type": None, "error_message": None,
        "created_at": now - timedelta(seconds=(finished_ago or 0) + 1),
        "finished_at": None if finished_ago is None else now - timedelta(seconds=finished_ago),
    }  # fmt: skip
    return {**row, **fields}


def _batch(batch_id: str, status: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": batch_id, "key_id": "k", "endpoint": "/v1/chat/completions",
        "input_file_id": "f", "completion_window": "24h", "status": status,
        "created_at": now, "expires_at": now + timedelta(days=1),
    }  # fmt: skip


def _delivery(delivery_id: str, job_id: str, status: str) -> dict[str, Any]:
    return {"id": delivery_id, "job_id": job_id, "key_id": "k", "url": "http://hook.test/",
            "status": status, "created_at": utcnow()}  # fmt: skip


def test_the_sweep_expires_finished_jobs_past_the_retention_and_leaves_what_is_still_read(
    database_url: str, redis_url: str
) -> None:
    engine = sa.create_engine(sync_url(database_url))
    client = redis.Redis.from_url(redis_url)
    many = [_job(f"old-{i}", 2 * HOUR) for i in range(CHUNK * 2 + 100)]  # three chunks
    rows = [
        _job("recent", 60),
        _job("running", None, status="running", output_text=None),
        _job("failed", 2 * HOUR, status="failed", output_text=None, error_type="rejected",
             error_message="no such model"),
        _job("in-open-batch", 2 * HOUR, batch_id="b-open"),
        _job("in-done-batch", 2 * HOUR, batch_id="b-done"),
        _job("hook-pending", 2 * HOUR),
        _job("hook-delivered", 2 * HOUR),
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(api_keys.insert(), {"id": "k", "name": "k", "prefix": "k",
                                         "key_hash": "k", "created_at": utcnow()})  # fmt: skip
        conn.execute(jobs.insert(), many + rows)
        conn.execute(batches.insert(), [_batch("b-open", "in_progress"),
                                        _batch("b-done", "completed")])  # fmt: skip
        deliveries = [_delivery("d1", "hook-pending", "pending"),
                      _delivery("d2", "hook-delivered", "delivered")]  # fmt: skip
        conn.execute(webhook_deliveries.insert(), deliveries)
    client.xadd(redis_keys.job_stream("old-0"), {"event": "done", "data": "{}"})

    expiry = ResultExpiry(engine, client, retention_seconds=HOUR, interval_seconds=60)
    assert expiry.sweep() == len(many) + 3  # + failed, in-done-batch, hook-delivered
    assert expiry.sweep() is None  # the lock is held for the interval

    with engine.connect() as conn:
        found = {r.id: r for r in conn.execute(jobs.select())}
    kept = {"recent", "running", "in-open-batch", "hook-pending"}
    for job_id, row in found.items():
        if job_id in kept:
            assert row.expired_at is None, job_id
            assert row.request["messages"], job_id
        else:
            assert row.expired_at is not None, job_id
            assert (row.request, row.output_text, row.result) == ({}, None, None), job_id
            # What the row still says: how it ended, what it used, what the client tagged.
            assert row.status in ("succeeded", "failed") and row.prompt_tokens == 3
            assert row.metadata == {"ref": job_id}
    assert found["failed"].error_message == "no such model"
    assert not client.exists(redis_keys.job_stream("old-0"))

    # The batch ends and the webhook is delivered: their jobs expire at the next pass.
    with engine.begin() as conn:
        conn.execute(batches.update().values(status="completed"))
        conn.execute(webhook_deliveries.update().values(status="failed"))
    client.delete(redis_keys.EXPIRY_LOCK)
    assert expiry.sweep() == 2
    engine.dispose()


def test_a_retention_of_zero_keeps_results_for_good(database_url: str, redis_url: str) -> None:
    engine = sa.create_engine(sync_url(database_url))
    with engine.begin() as conn:
        conn.execute(api_keys.insert(), {"id": "k", "name": "k", "prefix": "k",
                                         "key_hash": "k", "created_at": utcnow()})  # fmt: skip
        conn.execute(jobs.insert(), [_job("ancient", 400 * 86400)])
    expiry = ResultExpiry(engine, redis.Redis.from_url(redis_url), 0, interval_seconds=60)
    assert expiry.sweep() == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.output_text)).scalar_one() == "an answer"
    engine.dispose()


def test_an_expired_job_still_shows_how_it_ended_but_not_its_answer(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    database = f"sqlite:///{tmp_path / 'db'}"
    upgrade(database)
    svc = start_service(
        tmp_path,
        redis_dbs.allocate(),
        database,
        workers=(),
        extra_env={
            "INFERQ_RESULT_RETENTION_SECONDS": "2",
            "INFERQ_RESULT_EXPIRY_INTERVAL_SECONDS": "0.5",
        },
    )
    # Chosen once the API listens, so the two cannot pick the same free port.
    metrics_port = free_port()
    svc.env["INFERQ_WORKER_METRICS_PORT"] = str(metrics_port)
    svc.start_worker("io", 4)
    try:
        with svc.client() as client:
            body = {"model": "sim", "prompt": "hello", "max_tokens": 8, "metadata": {"a": "b"}}
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            done = cast(dict[str, Any], wait_for(lambda: _finished(client, job_id), timeout=30))
            assert done["output"]["text"] and done["expired_at"] is None

            expired = wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["expired_at"])
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert expired and job["output"] is None and job["result"] is None
            assert job["status"] == "succeeded" and job["usage"] == done["usage"]
            assert job["metadata"] == {"a": "b"}
            listed = client.get("/v1/jobs").json()["data"]
            assert [(j["id"], j["output"]) for j in listed] == [(job_id, None)]
            # Usage still counts it; its stream and its terminal event hold no answer.
            total = client.get("/v1/usage").json()["total"]
            assert (total["jobs"], total["completion_tokens"]) == (
                1,
                done["usage"]["completion_tokens"],
            )
            assert not svc.redis_stream_length(job_id)
            events = client.get(f"/v1/jobs/{job_id}/events")
            assert events.status_code == 200 and done["output"]["text"] not in events.text
            assert job_id in events.text
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "inferq_job_results_expired_total 1.0" in metrics
    finally:
        svc.stop()


def _finished(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] == "succeeded" else None
