"""A job's live stream survives Redis dropping out mid-answer."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from inferq import redis_keys
from inferq.jobs.schemas import Job, Output
from inferq.streams import StreamWriter
from tests.conftest import RedisDatabases, free_port


def unreachable() -> redis.Redis:
    """A client of a Redis that is not there (no retries of its own: they only add time)."""
    return redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def replay(client: redis.Redis, job_id: str) -> tuple[str, list[str]]:
    """What a reader that follows the protocol ends with: the text, and the events seen."""
    parts: list[str] = []
    events: list[str] = []
    for _id, fields in client.xrange(redis_keys.job_stream(job_id)):
        event = fields[b"event"].decode()
        events.append(event)
        if event == "reset":
            parts.clear()
        elif event == "delta":
            parts.append(orjson.loads(fields[b"data"])["text"])
    return "".join(parts), events


def test_deltas_lost_while_redis_is_away_are_repaired_before_the_end(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    away = unreachable()
    writer = StreamWriter(client, "job-1", ttl_seconds=60, maxlen=100, coalesce_seconds=0)
    writer.delta("one ")
    writer.client = away
    writer.delta("two ")  # not written: Redis is unreachable
    writer.client = client
    writer.delta("three")  # held back: the repair carries it
    job = Job(
        id="job-1",
        status="succeeded",
        model="sim",
        priority="normal",
        output=Output(text="one two three", finish_reason="stop"),
        created_at=datetime.now(UTC),
        attempts=1,
        metadata={},
    )
    writer.terminal(job)
    text, events = replay(client, "job-1")
    assert text == "one two three"
    assert events == ["delta", "reset", "delta", "done"]


def test_terminal_event_that_cannot_be_written_does_not_raise(redis_dbs: RedisDatabases) -> None:
    away = unreachable()
    writer = StreamWriter(away, "job-2", ttl_seconds=60, maxlen=100)
    job = Job(
        id="job-2",
        status="failed",
        model="sim",
        priority="normal",
        created_at=datetime.now(UTC),
        attempts=1,
        metadata={},
    )
    writer.terminal(job)  # logged, not raised: the row is the record


def test_deltas_close_together_are_sent_as_one_entry(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    writer = StreamWriter(client, "job-3", ttl_seconds=60, maxlen=100, coalesce_seconds=0.05)
    for word in ["a ", "b ", "c ", "d"]:
        writer.delta(word)  # the first goes at once; the rest wait for the next write
    assert replay(client, "job-3") == ("a ", ["delta"])
    job = Job(
        id="job-3",
        status="succeeded",
        model="sim",
        priority="normal",
        output=Output(text="a b c d", finish_reason="stop"),
        created_at=datetime.now(UTC),
        attempts=1,
        metadata={},
    )
    writer.terminal(job)
    assert replay(client, "job-3") == ("a b c d", ["delta", "delta", "done"])
