"""Server-Sent Events: live deltas, resume with Last-Event-ID, replay after the end."""

from __future__ import annotations

import json
from typing import Any

import httpx

from inferq.client import SSEEvent, iter_sse
from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import Service


def read_events(
    client: httpx.Client, job_id: str, last_event_id: str | None = None, limit: int | None = None
) -> list[SSEEvent]:
    """Events from the stream; with `limit`, drop the connection after that many."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[SSEEvent] = []
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=httpx.Timeout(10, read=60)
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in iter_sse(response.iter_lines()):
            events.append(event)
            if event.event in ("done", "error") or (limit and len(events) >= limit):
                break
    return events


def text_of(events: list[SSEEvent]) -> str:
    return "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")


def test_stream_resumed_with_last_event_id_has_no_gap_and_no_duplicate(service: Service) -> None:
    with service.client() as client:
        job = submit(
            client,
            model="gemma-3-270m",
            prompt="Once upon a time",
            max_tokens=48,
            temperature=0,
            seed=1,
        )
        first = read_events(client, job["id"], limit=5)
        assert len(first) == 5 and all(e.event == "delta" and e.id for e in first)
        rest = read_events(client, job["id"], last_event_id=first[-1].id)
        final = wait_terminal(client, job["id"])
    ids = [e.id for e in first + rest]
    assert len(ids) == len(set(ids))
    assert rest[-1].event == "done"
    assert sum(e.event in ("done", "error") for e in first + rest) == 1
    terminal: dict[str, Any] = json.loads(rest[-1].data)
    assert terminal["status"] == "succeeded" and terminal["id"] == job["id"]
    assert text_of(first + rest) == final["output"]["text"] == terminal["output"]["text"]
    assert final["output"]["text"]


def test_client_connecting_after_the_end_gets_the_whole_replay(service: Service) -> None:
    with service.client() as client:
        job = submit(client, model="sim", prompt="replay me")
        final = wait_terminal(client, job["id"])
        events = read_events(client, job["id"])
    assert events[-1].event == "done"
    assert text_of(events) == final["output"]["text"] != ""
    # Tokens that arrive within a few milliseconds share a delta.
    assert 1 <= sum(e.event == "delta" for e in events) <= final["usage"]["completion_tokens"]


def test_failed_job_ends_its_stream_with_one_error_event(service: Service) -> None:
    with service.client() as client:
        job = submit(client, model="sim-fail", prompt="x")
        events = read_events(client, job["id"])
    assert [e.event for e in events] == ["error"]
    body = json.loads(events[0].data)
    assert body["status"] == "failed" and body["error"]["type"] == "rejected"


def test_cancelled_queued_job_stream_ends_with_done(service: Service) -> None:
    with service.client() as client:
        busy = submit(client, model="gemma-3-270m", prompt="Tell me a story", max_tokens=120)
        queued = submit(client, model="gemma-3-270m", prompt="Hi", max_tokens=4)
        assert client.delete(f"/v1/jobs/{queued['id']}").status_code == 200
        events = read_events(client, queued["id"])
        client.delete(f"/v1/jobs/{busy['id']}")
    assert [e.event for e in events] == ["done"]
    assert json.loads(events[0].data)["status"] == "cancelled"


def test_idle_stream_sends_heartbeat_comments(service: Service) -> None:
    with service.client() as client:
        busy = submit(client, model="gemma-3-270m", prompt="Tell me a story", max_tokens=150)
        waiting = submit(client, model="gemma-3-270m", prompt="Hi", max_tokens=4)
        comments = 0
        with client.stream(
            "GET", f"/v1/jobs/{waiting['id']}/events", timeout=httpx.Timeout(10, read=10)
        ) as response:
            for line in response.iter_lines():
                if line.startswith(":"):
                    comments += 1
                    break
        client.delete(f"/v1/jobs/{busy['id']}")
        client.delete(f"/v1/jobs/{waiting['id']}")
    assert comments == 1
