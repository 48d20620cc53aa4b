"""The end-to-end path with RabbitMQ as the broker (Redis still holds the streams)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_events import read_events, text_of
from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import RedisDatabases, Service, reachable, start_service, wait_for

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(not reachable("127.0.0.1", 5672), reason="no RabbitMQ on 127.0.0.1:5672"),
]
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(scope="module")
def rabbit_service(
    tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDatabases
) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("rabbit")
    purge_queues()
    svc = start_service(tmp, redis_dbs.allocate(), f"sqlite:///{tmp / 'db.sqlite'}", RABBITMQ)
    try:
        yield svc
    finally:
        svc.stop()


def purge_queues() -> None:
    """Leftovers of an earlier run would be claimed by nobody; start clean."""
    from kombu.connection import Connection

    from inferq.queue import POOLS, pool_queues

    with Connection(RABBITMQ) as conn:  # type: ignore[no-untyped-call]  # kombu: unannotated
        channel = conn.channel()
        for pool in POOLS:
            for name in pool_queues(pool):
                try:
                    channel.queue_purge(name)
                except Exception:
                    channel = conn.channel()  # queue not declared yet


def test_jobs_run_end_to_end_through_rabbitmq(rabbit_service: Service) -> None:
    with rabbit_service.client() as client:
        sim = submit(client, model="sim", prompt="via rabbit")
        gemma = submit(
            client, model="gemma-3-270m", prompt="The sky is", max_tokens=12, temperature=0, seed=3
        )
        events = read_events(client, gemma["id"])
        finals = [wait_terminal(client, j["id"]) for j in (sim, gemma)]
    assert [f["status"] for f in finals] == ["succeeded", "succeeded"]
    assert events[-1].event == "done"
    streamed = json.loads(events[-1].data)["output"]["text"]
    assert text_of(events) == finals[1]["output"]["text"] == streamed


def test_cancel_running_job_through_rabbitmq(rabbit_service: Service) -> None:
    with rabbit_service.client() as client:
        job = submit(client, model="sim-slow", prompt="stop me")
        read_events(client, job["id"], limit=2)
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
        final = wait_terminal(client, job["id"], timeout=15)
    assert final["status"] == "cancelled"


def test_an_idle_worker_stops_within_seconds_of_sigterm(rabbit_service: Service) -> None:
    """With no message coming, AMQP never wakes the worker's event loop, which reads the
    stop flag only when it wakes: kombu sleeps up to 10 s between timers."""
    worker = rabbit_service.start_worker("io", 4)
    log = rabbit_service.root / f"worker-io-{len(rabbit_service.workers) - 1}.log"
    wait_for(lambda: "ready." in log.read_text(), timeout=30)
    time.sleep(1.5)  # past the start's own timers
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - started < 3.0
