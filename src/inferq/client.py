"""A small HTTP client for inferq's job API (used by `inferq submit` and the tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None


def iter_sse(lines: Iterator[str]) -> Iterator[SSEEvent]:
    """Parse Server-Sent Events from text lines; comments (heartbeats) are skipped."""
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SSEEvent(event, "\n".join(data), event_id)
            event, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


class InferqClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def __enter__(self) -> InferqClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def submit(self, model: str, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json={"model": model, **fields})
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    def wait(self, job_id: str, timeout: float = 300.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll until the job is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(interval)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[SSEEvent]:
        """The job's event stream, until its terminal event."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream(
            "GET",
            f"/v1/jobs/{job_id}/events",
            headers=headers,
            timeout=httpx.Timeout(30, read=None),
        ) as response:
            response.raise_for_status()
            for event in iter_sse(response.iter_lines()):
                yield event
                if event.event in ("done", "error"):
                    return

    def stream_text(self, job_id: str) -> Iterator[str]:
        """Just the text deltas (a `reset` restarts nothing here: callers print as it comes)."""
        for event in self.events(job_id):
            if event.event == "delta":
                yield str(orjson.loads(event.data)["text"])
