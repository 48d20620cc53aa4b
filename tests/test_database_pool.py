"""Each process keeps to `database_pool_size` connections, however busy it is."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import RedisDatabases, Service, drop_postgres, fresh_postgres, postgres_url


class ConnectionPeaks:
    """The most connections to `port` each process held at once, sampled every 50 ms."""

    def __init__(self, pids: list[int], port: int) -> None:
        self.port = port
        self.peaks = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionPeaks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self.peaks:
                held = sum(
                    1
                    for c in psutil.Process(pid).net_connections("tcp")
                    if c.raddr and c.raddr.port == self.port and c.status == psutil.CONN_ESTABLISHED
                )
                self.peaks[pid] = max(self.peaks[pid], held)


@pytest.mark.slow  # a load test: 150 jobs from 32 threads (`make test-slow`)
@pytest.mark.skipif(postgres_url() is None, reason="needs INFERQ_TEST_DATABASE_URL (PostgreSQL)")
def test_api_and_worker_stay_within_their_pool_and_every_job_ends(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    admin = postgres_url()
    assert admin is not None
    database_url, name = fresh_postgres(admin)
    port = sa.engine.make_url(database_url).port or 5432
    env = {"INFERQ_DATABASE_POOL_SIZE": "3"}
    svc = Service(tmp_path, redis_dbs.allocate(), database_url, broker_url=None, extra_env=env)
    try:
        svc.start_api()
        svc.start_worker("io", 64)
        pids = [p.pid for p in svc.processes]
        with (
            ConnectionPeaks(pids, port) as peaks,
            svc.client() as client,
            ThreadPoolExecutor(32) as pool,
        ):
            jobs = list(pool.map(lambda i: submit(client, model="sim", prompt=f"n{i}"), range(150)))
            finals = list(pool.map(lambda job: wait_terminal(client, job["id"]), jobs))
    finally:
        svc.stop()
        drop_postgres(admin, name)
    assert [job["status"] for job in finals] == ["succeeded"] * 150
    assert all(1 <= peak <= 3 for peak in peaks.peaks.values()), peaks.peaks
