"""A job's live stream survives Redis dropping out mid-answer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import cast

import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from inferq import redis_keys
from inferq.jobs.schemas import Job, Output
from inferq.streams import StreamSink, StreamWriter
from tests.conftest import RedisDatabases, free_port


def unreachable() -> redis.Redis:
    """A client of a Redis that is not there (no retries of its own: they only add time)."""
    return redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def replay(client: redis.Redis, job_id: str) -> tuple[str, list[str]]:
    """What a reader that follows the protocol ends with: the text, and the events seen."""
    parts: list[str] = []
    events: list[str] = []
    # The client does not decode responses: redis-py's annotation also allows None and str.
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]], client.xrange(redis_keys.job_stream(job_id))
    )
    for _id, fields in entries:
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


def finished(job_id: str, text: str) -> Job:
    return Job(
        id=job_id,
        status="succeeded",
        model="sim",
        priority="normal",
        output=Output(text=text, finish_reason="stop"),
        created_at=datetime.now(UTC),
        attempts=1,
        metadata={},
    )


@pytest.mark.parametrize("running", [1, 1000], ids=["entries-also-inline", "all-through-sink"])
def test_a_sink_writes_many_jobs_entries_in_order_before_each_terminal(
    redis_url: str, running: int
) -> None:
    client = redis.Redis.from_url(redis_url)
    sink = StreamSink(client, jobs_running=lambda: running)

    def job(n: int) -> None:
        writer = StreamWriter(client, f"job-{n}", 60, 500, coalesce_seconds=0, sink=sink)
        for i in range(40):
            writer.delta(f"{i} ")
            if i == 19:
                writer.reset(2)  # the second attempt starts over
        writer.terminal(finished(f"job-{n}", ""))

    threads = [threading.Thread(target=job, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    second = "".join(f"{i} " for i in range(20, 40))
    for n in range(32):
        text, events = replay(client, f"job-{n}")
        assert text == second
        assert events == ["delta"] * 20 + ["reset"] + ["delta"] * 20 + ["done"]
        assert 0 < client.ttl(redis_keys.job_stream(f"job-{n}")) <= 60


def test_a_sinks_failed_write_is_repaired_by_its_writers_terminal(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    sink = StreamSink(unreachable())
    writer = StreamWriter(client, "job-4", 60, 100, coalesce_seconds=0, sink=sink)
    writer.delta("one ")  # the sink cannot write it
    sink.wait(writer)
    sink.client = client
    writer.delta("two")  # held back: the repair carries it
    writer.terminal(finished("job-4", "one two"))
    assert replay(client, "job-4") == ("one two", ["reset", "delta", "done"])
    # A reset handed over clears the gap: the next attempt's deltas go out as they come.
    writer = StreamWriter(client, "job-5", 60, 100, coalesce_seconds=0, sink=sink)
    sink.client = unreachable()
    writer.delta("lost ")
    sink.wait(writer)
    sink.client = client
    writer.reset(2)
    writer.delta("kept")
    writer.terminal(finished("job-5", "kept"))
    assert replay(client, "job-5") == ("kept", ["reset", "delta", "done"])


def test_an_idle_sink_at_low_load_has_the_entry_written_before_the_delta_returns(
    redis_url: str,
) -> None:
    # Nothing to batch it with: the job's thread writes it, no switch to the sink's.
    client = redis.Redis.from_url(redis_url)
    sink = StreamSink(client, jobs_running=lambda: 1)
    writer = StreamWriter(client, "job-6", 60, 100, coalesce_seconds=0, sink=sink)
    writer.delta("first")
    assert replay(client, "job-6") == ("first", ["delta"])
    assert 0 < client.ttl(redis_keys.job_stream("job-6")) <= 60
    writer.delta(" second")
    writer.terminal(finished("job-6", "first second"))
    assert replay(client, "job-6") == ("first second", ["delta", "delta", "done"])
