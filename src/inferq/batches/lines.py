"""A batch's input file: one JSON request per line, checked as the live routes check them.

The same parser runs at upload (a bad file is refused with every bad line named) and in
the worker's fan-out (which turns the lines into jobs), so both agree on what a line is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from inferq.config import Settings
from inferq.errors import InferqError, InvalidRequest
from inferq.jobs.schemas import JobCreate
from inferq.jobs.validation import check_embedding_options
from inferq.oai.schemas import ChatCompletionRequest, CompletionRequest, checked_job
from inferq.providers.registry import ModelRegistry

ENDPOINT_BODIES: dict[str, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
}
MAX_CUSTOM_ID = 512
# How many bad lines an error message lists before it summarises the rest.
LISTED_ERRORS = 20


@dataclass(frozen=True)
class BatchLine:
    """One valid request: `index` is its position among the file's requests, `line` its
    line number in the file."""

    index: int
    line: int
    custom_id: str
    url: str
    job: JobCreate
    pool: str


@dataclass(frozen=True)
class LineError:
    """Why a line (1-based, as an editor counts) is not a valid request."""

    line: int | None
    message: str
    param: str | None = None
    code: str = "invalid_request"

    def as_batch_error(self) -> dict[str, Any]:
        """OpenAI's BatchError object."""
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


class LineInvalid(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ParsedFile:
    lines: list[BatchLine]
    errors: list[LineError]


class LineParser:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def parse(self, content: bytes) -> ParsedFile:
        """Every request of the file, and every line that is not one."""
        lines: list[BatchLine] = []
        errors: list[LineError] = []
        first_seen: dict[str, int] = {}
        for number, raw in _numbered_lines(content):
            try:
                line = self._line(raw, len(lines), number)
            except LineInvalid as exc:
                errors.append(LineError(number, exc.message, exc.param))
                continue
            if line.custom_id in first_seen:
                message = f"custom_id {line.custom_id!r} repeats line {first_seen[line.custom_id]}"
                errors.append(LineError(number, message, "custom_id"))
                continue
            first_seen[line.custom_id] = number
            lines.append(line)
        if not lines and not errors:
            errors.append(LineError(None, "the file holds no requests", code="empty_file"))
        if len(lines) > self.settings.max_batch_requests:
            message = (
                f"the file holds {len(lines)} requests; at most {self.settings.max_batch_requests}"
            )
            errors.append(LineError(None, message, code="too_many_requests"))
        return ParsedFile(lines, errors)

    def _line(self, raw: bytes, index: int, number: int) -> BatchLine:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise LineInvalid("not valid JSON") from exc
        if not isinstance(data, dict):
            raise LineInvalid("not a JSON object")
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
            raise LineInvalid(
                f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters", "custom_id"
            )
        if "\x00" in custom_id:  # PostgreSQL keeps none in text: the fan-out failed on it
            raise LineInvalid("custom_id must not contain NUL (\\u0000) characters", "custom_id")
        if data.get("method") != "POST":
            raise LineInvalid("method must be POST", "method")
        url = data.get("url")
        if url not in ENDPOINT_BODIES:
            raise LineInvalid(f"url must be one of {', '.join(ENDPOINT_BODIES)}", "url")
        body = data.get("body")
        if not isinstance(body, dict):
            raise LineInvalid("body must be a JSON object", "body")
        job, pool = self._job(ENDPOINT_BODIES[url], body)
        return BatchLine(index, number, custom_id, url, job, pool)

    def _job(
        self, schema: type[ChatCompletionRequest] | type[CompletionRequest], body: dict[str, Any]
    ) -> tuple[JobCreate, str]:
        try:
            request = schema.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(["body", *(str(p) for p in first["loc"])])
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise LineInvalid(f"{param}: {first['msg']}{more}", param) from exc
        if request.stream:
            raise LineInvalid("body.stream: a batch request cannot stream", "body.stream")
        try:
            spec = self.registry.get(request.model)
            job = checked_job(request.to_job(), spec, self.settings)
            check_embedding_options(job, self.settings, self.registry)
            if job.conversation_id is not None:
                raise InvalidRequest("a batch request cannot name a conversation")
        except InferqError as exc:
            raise LineInvalid(f"body: {_detail(exc)}", "body") from exc
        return job, spec.pool


def describe(errors: list[LineError]) -> str:
    """One message naming each bad line (the first few of them) and why."""
    parts = [
        f"line {e.line}: {e.message}" if e.line is not None else e.message
        for e in errors[:LISTED_ERRORS]
    ]
    if len(errors) > LISTED_ERRORS:
        parts.append(f"and {len(errors) - LISTED_ERRORS} more bad lines")
    return "the batch input file is not valid: " + "; ".join(parts)


def _numbered_lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) of each line that is not blank."""
    for number, raw in enumerate(content.split(b"\n"), start=1):
        if raw.strip():
            yield number, raw


def _detail(error: InferqError) -> str:
    """The error's detail, with the fields a limit error names."""
    fields = [
        ".".join(str(p) for p in e.get("loc", []) if p != "body") + f" {e.get('msg', '')}"
        for e in error.extra.get("errors", [])
    ]
    return error.detail + (f" ({'; '.join(fields)})" if fields else "")
