"""No accepted job is lost: a broker that refuses gives 503 and leaves no row queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from inferq.db.engine import sync_url
from tests.conftest import RedisDatabases, Service, free_port


@pytest.fixture
def service_without_broker(tmp_path: Path, redis_dbs: RedisDatabases) -> Iterator[Service]:
    svc = Service(tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db.sqlite'}",
                  broker_url=f"redis://127.0.0.1:{free_port()}/0")
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
