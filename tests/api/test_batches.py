"""The Batch API through the official SDK: lines become low-priority jobs on real workers."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from tests.batch_support import (
    by_custom_id,
    chat_line,
    completion_line,
    fresh_key,
    result_lines,
    sdk_for,
    start_batch,
    wait_batch,
)
from tests.conftest import Service, wait_for

BATCH_KEYS = {
    "id", "object", "endpoint", "errors", "input_file_id", "completion_window", "status",
    "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at",
    "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
    "cancelled_at", "request_counts", "metadata",
}  # fmt: skip


@pytest.fixture
def sdk(service: Service) -> openai.OpenAI:
    return sdk_for(service)


def job_of(service: Service, job_id: str, key: str | None = None) -> dict[str, Any]:
    with service.client(key) as client:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return job


def test_chat_batch_completes_with_one_chat_completion_per_line(
    service: Service, sdk: openai.OpenAI
) -> None:
    lines = [chat_line(f"q-{i}", text=f"question number {i}", max_tokens=8) for i in range(6)]
    created = start_batch(sdk, lines, metadata={"run": "nightly"})
    assert created.id.startswith("batch_") and created.object == "batch"
    assert created.status == "validating"
    assert created.expires_at == created.created_at + 24 * 3600
    done = wait_batch(sdk, created.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 6, "completed": 6, "failed": 0}
    assert done.output_file_id and done.error_file_id is None and done.errors is None
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert created.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.metadata == {"run": "nightly"}
    assert (done.endpoint, done.input_file_id) == ("/v1/chat/completions", created.input_file_id)
    with service.client() as client:
        assert set(client.get(f"/v1/batches/{done.id}").json()) == BATCH_KEYS
    assert sdk.files.retrieve(done.output_file_id).purpose == "batch_output"

    output = result_lines(sdk, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"q-{i}" for i in range(6)]
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(line["response"]["body"])
        job = job_of(service, line["response"]["request_id"])
        assert line["id"] == f"batch_req_{job['id']}"
        assert completion.id == f"chatcmpl-{job['id']}" and completion.model == "sim"
        assert completion.choices[0].message.content == job["output"]["text"]
        assert completion.usage is not None
        assert completion.usage.completion_tokens == job["usage"]["completion_tokens"]
        assert (job["status"], job["priority"]) == ("succeeded", "low")


def test_completions_batch_answers_text_completions(service: Service, sdk: openai.OpenAI) -> None:
    lines = [completion_line(f"c-{i}", prompt=f"Once upon a time {i}") for i in range(3)]
    done = wait_batch(sdk, start_batch(sdk, lines, endpoint="/v1/completions").id)
    assert done.status == "completed", done
    for line in result_lines(sdk, done.output_file_id):
        completion = Completion.model_validate(line["response"]["body"])
        job = job_of(service, line["response"]["request_id"])
        assert completion.object == "text_completion"
        assert completion.choices[0].text == job["output"]["text"]


def test_a_line_the_provider_finds_invalid_is_a_400_in_the_error_file(sdk: openai.OpenAI) -> None:
    lines = [chat_line("fine"), chat_line("invalid", model="sim-invalid")]
    done = wait_batch(sdk, start_batch(sdk, lines).id)
    [error] = result_lines(sdk, done.error_file_id)
    assert done.status == "completed" and error["custom_id"] == "invalid"
    assert error["error"]["code"] == "invalid_request"
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["type"] == "invalid_request_error"


def test_200_lines_with_5_percent_failing_end_in_the_right_files(sdk: openai.OpenAI) -> None:
    custom_ids = [f"line-{i:03d}" for i in range(200)]
    failing = set(custom_ids[::20])
    lines = [
        chat_line(c, model="sim-fail" if c in failing else "sim", text=c, max_tokens=4)
        for c in custom_ids
    ]
    done = wait_batch(sdk, start_batch(sdk, lines).id, timeout=90)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 200, "completed": 190, "failed": 10}
    errors = by_custom_id(result_lines(sdk, done.error_file_id))
    assert set(errors) == failing
    for line in errors.values():
        assert line["error"]["code"] == "rejected" and line["error"]["message"]
        assert line["response"]["status_code"] == 502
        assert line["response"]["body"]["error"]["type"] == "api_error"
    output = result_lines(sdk, done.output_file_id)
    assert [line["custom_id"] for line in output] == [c for c in custom_ids if c not in failing]


def test_cancel_keeps_finished_lines_and_drops_cancelled_ones(service: Service) -> None:
    key = fresh_key(service)
    sdk = sdk_for(service, key)
    fast = [chat_line(f"fast-{i}", max_tokens=4) for i in range(3)]
    slow = [chat_line(f"slow-{i}", model="sim-slow", text=f"slow {i}") for i in range(40)]
    batch = start_batch(sdk, fast + slow)

    def fast_done() -> bool:
        counts = sdk.batches.retrieve(batch.id).request_counts
        return counts is not None and counts.completed >= 3

    wait_for(fast_done, timeout=30)
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    done = wait_batch(sdk, batch.id, timeout=30)
    assert done.status == "cancelled" and done.cancelled_at, done
    assert sdk.batches.cancel(batch.id).status == "cancelled"  # cancelling again is a no-op

    output = by_custom_id(result_lines(sdk, done.output_file_id))
    assert {"fast-0", "fast-1", "fast-2"} <= set(output) and len(output) < 43
    assert all(line["response"]["status_code"] == 200 for line in output.values())
    assert done.error_file_id is None  # cancelled requests are in neither file
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 43, "completed": len(output), "failed": 0}
    with service.client(key) as client:
        cancelled = client.get("/v1/jobs", params={"status": "cancelled", "limit": 100}).json()
        active = [
            client.get("/v1/jobs", params={"status": s}).json()["data"]
            for s in ("queued", "running")
        ]
    assert len(cancelled["data"]) == 43 - len(output)
    assert active == [[], []]
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(wait_batch(sdk, start_batch(sdk, fast).id).id)


def test_batches_list_newest_first_with_after_and_limit(service: Service) -> None:
    key = fresh_key(service)
    sdk = sdk_for(service, key)
    ids = [start_batch(sdk, [chat_line(f"only-{i}")]).id for i in range(3)]
    first = sdk.batches.list(limit=2)
    assert [b.id for b in first.data] == [ids[2], ids[1]] and first.has_more
    rest = sdk.batches.list(limit=2, after=ids[1])
    assert [b.id for b in rest.data] == [ids[0]] and not rest.has_more
    with service.client(key) as client:
        page = client.get("/v1/batches", params={"limit": 2}).json()
    assert page["object"] == "list"
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[2], ids[1], True)
    assert [b.id for b in sdk.batches.list()] == ids[::-1]


def test_another_keys_batch_is_not_found(service: Service, sdk: openai.OpenAI) -> None:
    batch = start_batch(sdk, [chat_line("mine")])
    theirs = sdk_for(service, fresh_key(service))
    for call in (theirs.batches.retrieve, theirs.batches.cancel):
        with pytest.raises(openai.NotFoundError):
            call(batch.id)
    assert batch.id not in [b.id for b in theirs.batches.list()]
    with pytest.raises(openai.NotFoundError):
        theirs.batches.create(
            input_file_id=batch.input_file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )


def test_lines_for_another_endpoint_fail_the_batch_naming_them(sdk: openai.OpenAI) -> None:
    lines = [
        chat_line("chat-0"),
        completion_line("text-1"),
        chat_line("chat-2"),
        completion_line("text-3"),
    ]
    done = wait_batch(sdk, start_batch(sdk, lines).id)
    assert done.status == "failed" and done.failed_at, done
    assert done.errors is not None and done.errors.data is not None
    assert [(e.line, e.param) for e in done.errors.data] == [(2, "url"), (4, "url")]
    assert done.request_counts is not None and done.request_counts.total == 0
    assert done.output_file_id is None and done.error_file_id is None


def test_invalid_batch_creations_are_refused(sdk: openai.OpenAI) -> None:
    notes = sdk.files.create(file=("notes.txt", b"plain"), purpose="user_data")
    with pytest.raises(openai.BadRequestError):  # not a batch input file
        sdk.batches.create(
            input_file_id=notes.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(
            input_file_id=notes.id,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )


def test_a_custom_id_holding_nul_is_refused_naming_its_line(sdk: openai.OpenAI) -> None:
    """PostgreSQL keeps no NUL in text: such a line stuck its batch in `validating` there,
    the fan-out failing on every pass of the sweep."""
    with pytest.raises(openai.BadRequestError) as refused:
        start_batch(sdk, [chat_line("fine"), chat_line("a\x00b")])
    assert "line 2: custom_id must not contain NUL" in str(refused.value)
