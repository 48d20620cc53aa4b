"""A finished batch's output and error files, one JSON line per request, in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from inferq.jobs.schemas import Job
from inferq.oai import format

RENDERERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "/v1/chat/completions": format.chat_completion,
    "/v1/completions": format.text_completion,
}
# The status a synchronous route answers for a failed job (JobFailed).
FAILED_STATUS = 502
INVALID_STATUS = 400  # the provider found the line's request invalid
UNFINISHED_ERRORS = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "completed": ("request_cancelled", "The request's job was cancelled."),
}


def result_files(rows: Sequence[Any], endpoint: str, outcome: str) -> tuple[bytes, bytes]:
    """(output file, error file) of a batch whose jobs have all ended.

    Succeeded jobs go to the output file and failed ones to the error file. A cancelled
    job goes to the error file too, except in a cancelled batch: like OpenAI, a batch
    cancelled by its owner reports its cancelled requests nowhere.
    """
    render = RENDERERS[endpoint]
    output: list[bytes] = []
    errors: list[bytes] = []
    for row in rows:
        job = Job.from_row(row)
        if job.status == "succeeded":
            output.append(_line(job, row.custom_id, _success(job, render), None))
        elif job.status == "failed":
            errors.append(_line(job, row.custom_id, _failure(job), _job_error(job)))
        elif outcome != "cancelled":
            code, message = UNFINISHED_ERRORS.get(outcome, UNFINISHED_ERRORS["completed"])
            errors.append(_line(job, row.custom_id, None, {"code": code, "message": message}))
    return _jsonl(output), _jsonl(errors)


def _line(
    job: Job, custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None
) -> bytes:
    return orjson.dumps(
        {"id": f"batch_req_{job.id}", "custom_id": custom_id, "response": response, "error": error}
    )


def _success(job: Job, render: Callable[[Job], dict[str, Any]]) -> dict[str, Any]:
    return {"status_code": 200, "request_id": job.id, "body": render(job)}


def _failure(job: Job) -> dict[str, Any]:
    status = INVALID_STATUS if job.refused_as_invalid else FAILED_STATUS
    return {"status_code": status, "request_id": job.id, "body": format.job_error(job)}


def _job_error(job: Job) -> dict[str, Any]:
    if job.error is None:
        return {"code": "job_failed", "message": "the job failed"}
    return {"code": job.error.type, "message": job.error.message}


def _jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)
