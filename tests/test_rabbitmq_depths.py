"""Queue depths read from RabbitMQ (its own module: the other RabbitMQ tests' workers,
alive for their whole module, would consume the messages this one counts)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_jobs import submit
from tests.conftest import RedisDatabases, Service
from tests.test_rabbitmq import RABBITMQ, purge_queues, pytestmark  # noqa: F401


def test_metrics_and_top_read_queue_depths_from_rabbitmq(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    purge_queues()
    svc = Service(tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db.sqlite'}", RABBITMQ)
    svc.start_api()  # no worker: what is submitted stays in the queues
    try:
        with svc.client() as client:
            for n in range(3):
                submit(client, model="sim", prompt=f"wait {n}", priority="high")
            submit(client, model="sim", prompt="wait too", priority="low")
            scraped = client.get("/metrics").text
        top = svc.top_once().stdout
    finally:
        svc.stop()
        purge_queues()
    depths = {
        s.labels["queue"]: s.value
        for family in text_string_to_metric_families(scraped)
        if family.name == "inferq_queue_depth"
        for s in family.samples
    }
    assert depths["io.high"] == 3 and depths["io.low"] == 1, depths
    assert depths["io.normal"] == 0 and depths["local.high"] == 0, depths
    assert re.search(r"io\.high\s*│\s*3\b", top), top
