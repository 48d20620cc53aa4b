"""File expiry: `expires_after` on uploads and batches, the retention's default for batch
files, and the sweep that deletes what expired."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import sqlalchemy as sa

from inferq import redis_keys
from inferq.db.engine import sync_url
from inferq.db.migrate import upgrade
from inferq.db.tables import api_keys, batches, files
from inferq.files.expiry import CHUNK, FileExpiry
from inferq.jobs.store import utcnow
from tests.batch_support import chat_line, jsonl, sdk_for, start_batch, wait_batch
from tests.conftest import MODELS, RedisDatabases, Service, free_port, start_service, wait_for

THIRTY_DAYS = 30 * 86400


@pytest.fixture
def sdk(service: Service) -> openai.OpenAI:
    return sdk_for(service)


def test_an_upload_expires_when_its_expires_after_says(sdk: openai.OpenAI) -> None:
    hour = sdk.files.create(
        file=("notes.txt", b"kept an hour"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert hour.expires_at == hour.created_at + 3600
    assert sdk.files.retrieve(hour.id).expires_at == hour.expires_at
    # OpenAI's defaults: a batch file expires after 30 days (here: the result retention),
    # any other file is kept until deleted.
    kept = sdk.files.create(file=("notes.txt", b"kept"), purpose="user_data")
    assert kept.expires_at is None
    requests = sdk.files.create(file=("in.jsonl", jsonl([chat_line("a")])), purpose="batch")
    assert requests.expires_at == requests.created_at + THIRTY_DAYS


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "60"}, "anchor"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "0"}, "seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"}, "seconds"),
        ({"expires_after[seconds]": "60"}, "anchor"),
    ],
)
def test_a_bad_expires_after_is_refused_naming_the_field(
    service: Service, fields: dict[str, str], named: str
) -> None:
    with service.client() as client:
        before = len(client.get("/v1/files").json()["data"])
        answer = client.post(
            "/v1/files",
            data={"purpose": "user_data", **fields},
            files={"file": ("notes.txt", b"x")},
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert f"expires_after[{named}]" in error["message"], error
        assert len(client.get("/v1/files").json()["data"]) == before


def test_a_batch_keeps_its_result_files_as_output_expires_after_says(
    sdk: openai.OpenAI,
) -> None:
    batch = start_batch(
        sdk, [chat_line("a"), chat_line("b")],
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )  # fmt: skip
    done = wait_batch(sdk, batch.id)
    assert done.status == "completed" and done.output_file_id
    output = sdk.files.retrieve(done.output_file_id)
    assert output.expires_at == output.created_at + 7200
    # Without it, the result retention (30 days by default), as the answers' own.
    plain = wait_batch(sdk, start_batch(sdk, [chat_line("c")]).id)
    assert plain.output_file_id
    output = sdk.files.retrieve(plain.output_file_id)
    assert output.expires_at == output.created_at + THIRTY_DAYS
    with pytest.raises(openai.BadRequestError) as refused:
        start_batch(sdk, [chat_line("d")],
                    output_expires_after={"anchor": "created_at", "seconds": -5})  # fmt: skip
    assert "output_expires_after" in str(refused.value.body)


def test_an_expired_file_is_gone_at_once_and_deleted_by_the_sweep(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    database = f"sqlite:///{tmp_path / 'db'}"
    upgrade(database)
    svc = start_service(
        tmp_path, redis_dbs.allocate(), database, workers=(), models_file=MODELS,
        extra_env={"INFERQ_RESULT_EXPIRY_INTERVAL_SECONDS": "0.5"},
    )  # fmt: skip
    metrics_port = free_port()
    svc.env["INFERQ_WORKER_METRICS_PORT"] = str(metrics_port)
    sdk = sdk_for(svc)
    try:
        # Uploaded before a worker runs, so that the API alone must hide it once due.
        brief = sdk.files.create(
            file=("in.jsonl", jsonl([chat_line("a")])),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 1},
        )
        kept = sdk.files.create(file=("notes.txt", b"kept"), purpose="user_data")
        wait_for(lambda: _gone(sdk, brief.id), timeout=10)
        with pytest.raises(openai.NotFoundError):
            sdk.files.content(brief.id)
        with pytest.raises(openai.NotFoundError):
            sdk.files.delete(brief.id)
        assert [f.id for f in sdk.files.list()] == [kept.id]
        with pytest.raises(openai.NotFoundError):  # a batch cannot start from it
            sdk.batches.create(input_file_id=brief.id, endpoint="/v1/chat/completions",
                               completion_window="24h")  # fmt: skip
        assert _file_ids(database) == {brief.id, kept.id}  # hidden, not yet deleted

        svc.start_worker("io", 2)
        wait_for(lambda: _file_ids(database) == {kept.id}, timeout=30)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "inferq_files_expired_total 1.0" in metrics
    finally:
        svc.stop()


def _gone(sdk: openai.OpenAI, file_id: str) -> bool:
    try:
        sdk.files.retrieve(file_id)
    except openai.NotFoundError:
        return True
    return False


def _file_ids(database: str) -> set[str]:
    engine = sa.create_engine(sync_url(database))
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.select(files.c.id)).scalars())
    finally:
        engine.dispose()


def _file(file_id: str, expires_at: datetime | None) -> dict[str, Any]:
    return {"id": file_id, "key_id": "k", "purpose": "batch", "filename": "f.jsonl",
            "bytes": 1, "content": b"x", "created_at": utcnow(),
            "expires_at": expires_at}  # fmt: skip


def _batch(batch_id: str, input_file_id: str, status: str) -> dict[str, Any]:
    now = utcnow()
    return {"id": batch_id, "key_id": "k", "endpoint": "/v1/chat/completions",
            "input_file_id": input_file_id, "completion_window": "24h", "status": status,
            "created_at": now, "expires_at": now + timedelta(days=1)}  # fmt: skip


def test_the_sweep_deletes_expired_files_but_an_unfinished_batchs_input(
    database_url: str, redis_url: str
) -> None:
    engine = sa.create_engine(sync_url(database_url))
    client = redis.Redis.from_url(redis_url)
    past, future = utcnow() - timedelta(seconds=1), utcnow() + timedelta(hours=1)
    many = [_file(f"old-{i}", past) for i in range(CHUNK + 5)]  # two chunks
    rows = [_file("future", future), _file("kept", None),
            _file("open-input", past), _file("done-input", past)]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(api_keys.insert(), {"id": "k", "name": "k", "prefix": "k",
                                         "key_hash": "k", "created_at": utcnow()})  # fmt: skip
        conn.execute(files.insert(), many + rows)
        conn.execute(batches.insert(), [_batch("b-open", "open-input", "in_progress"),
                                        _batch("b-done", "done-input", "completed")])  # fmt: skip

    expiry = FileExpiry(engine, client, interval_seconds=60)
    assert expiry.sweep() == len(many) + 1  # + done-input
    assert expiry.sweep() is None  # the lock is held for the interval
    with engine.connect() as conn:
        left = set(conn.execute(sa.select(files.c.id)).scalars())
    assert left == {"future", "kept", "open-input"}

    # The batch ends: its input goes at the next pass.
    with engine.begin() as conn:
        conn.execute(batches.update().values(status="completed"))
    client.delete(redis_keys.FILE_EXPIRY_LOCK)
    assert expiry.sweep() == 1
    engine.dispose()
