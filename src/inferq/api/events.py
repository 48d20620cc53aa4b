"""`GET /v1/jobs/{id}/events`: the job's deltas and terminal event as Server-Sent Events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse, ServerSentEvent

from inferq.api.deps import CurrentKey, ServicesDep
from inferq.api.jobs import _job_or_404
from inferq.errors import InvalidRequest
from inferq.jobs.schemas import TERMINAL_STATUSES, Job
from inferq.streams import (
    TERMINAL_EVENTS,
    StreamEvent,
    read_after,
    terminal_entry,
    text_until,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
BLOCK_MS = 2000


def _replay_from_row(job: Job, cursor: str, delivered: str) -> list[StreamEvent]:
    """The missing end of a finished job's stream, rebuilt from its row.

    If the stream expired, the whole text comes as one delta (id 0-1) before the terminal
    event (0-2). Otherwise the events follow the last id sent: the terminal event, after
    a `reset` and the whole text as one delta when what the reader holds (`delivered`) is
    not the job's text (the worker saves the row before its last entries reach the stream,
    and a worker cut off from Redis never writes them), the repair the worker itself
    makes when it could not write some deltas.
    """
    entry = terminal_entry(job)
    terminal = (entry["event"].decode(), entry["data"])
    ms, seq = (int(part) for part in cursor.split("-")) if cursor != "0" else (0, 0)
    if ms > 0:
        text = job.output.text if job.output else delivered
        repair: list[tuple[str, bytes]] = []
        if text != delivered:
            reset = orjson.dumps({"attempt": job.attempts})
            repair = [("reset", reset), ("delta", orjson.dumps({"text": text}))]
        return [
            StreamEvent(f"{ms}-{seq + i}", *event)
            for i, event in enumerate([*repair, terminal], start=1)
        ]
    events = []
    if job.output and job.output.text:
        events.append(StreamEvent("0-1", "delta", orjson.dumps({"text": job.output.text})))
    events.append(StreamEvent("0-2", *terminal))
    return [e for e in events if cursor == "0" or _after(e.id, cursor)]


def _after(a: str, b: str) -> bool:
    """Stream id `a` comes after `b`."""
    a_ms, a_seq = a.split("-")
    b_ms, b_seq = b.split("-")
    return (int(a_ms), int(a_seq)) > (int(b_ms), int(b_seq))


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job_id: str,
    key_id: CurrentKey,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Deltas as the worker produces them, then one `done` or `error` event.

    Reconnect with `Last-Event-ID` to continue after that event; a `reset` event means a
    new attempt started and the text received so far must be discarded.
    """
    await _job_or_404(services, key_id, job_id)
    after = last_event_id or "0"
    if not EVENT_ID.match(after) and after != "0":
        raise InvalidRequest("`Last-Event-ID` must be an id this stream sent")

    async def events() -> AsyncIterator[ServerSentEvent]:
        cursor = after
        while True:
            batch = await read_after(services.redis, job_id, cursor, BLOCK_MS)
            for event in batch:
                yield ServerSentEvent(data=event.data.decode(), event=event.event, id=event.id)
                cursor = event.id
                if event.event in TERMINAL_EVENTS:
                    return
            if batch:
                continue
            # Idle: the job may have ended without a terminal event reaching the stream
            # (stream expired, or the worker died between its two writes).
            job = await _job_or_404(services, key_id, job_id)
            if job.status not in TERMINAL_STATUSES:
                continue
            late = await read_after(services.redis, job_id, cursor, 200)
            if late:
                for event in late:
                    yield ServerSentEvent(data=event.data.decode(), event=event.event, id=event.id)
                    if event.event in TERMINAL_EVENTS:
                        return
                continue
            delivered = "" if cursor == "0" else await text_until(services.redis, job_id, cursor)
            for event in _replay_from_row(job, cursor, delivered):
                yield ServerSentEvent(data=event.data.decode(), event=event.event, id=event.id)
            return

    return EventSourceResponse(events(), ping=int(services.settings.sse_ping_seconds))
