"""`inferq serve`, the one-command deployment, driven as a user would drive it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

import httpx
import orjson
import psutil

from tests.conftest import free_port, wait_for


class Output:
    """Collects a process's output lines in the background."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True).start()

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None


def worker_pids(serve: subprocess.Popen[str]) -> set[int]:
    pids = set()
    for child in psutil.Process(serve.pid).children(recursive=True):
        try:
            if "worker" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:  # a killed worker is a zombie until the supervisor reaps it
            continue
    return pids


def test_serve_starts_everything_serves_the_model_and_restarts_a_killed_worker(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(INFERQ_DATA_DIR=str(tmp_path / "data"), INFERQ_PORT=str(port))
    serve = subprocess.Popen(
        [sys.executable, "-m", "inferq", "serve"],
        env=env,
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = Output(serve)
    try:
        key_line = wait_for(lambda: out.find(r"^\s+(iq_\S+)\s*$"), timeout=60)
        key = key_line.group(1)  # type: ignore[attr-defined]
        assert out.find(rf"http://127\.0\.0\.1:{port}") and out.find(r"curl ")
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), timeout=60)
        assert (tmp_path / "data" / "redis.url").exists()
        assert (tmp_path / "data" / "inferq.db").exists()

        submitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "inferq",
                "submit",
                "gemma-3-270m",
                "The capital of France is",
                "--max-tokens",
                "16",
                "--wait",
            ],
            env={**env, "INFERQ_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr
        job = orjson.loads(submitted.stdout)
        assert job["status"] == "succeeded" and job["output"]["text"].strip()
        # One /metrics shows the workers' metrics too (multiprocess mode under serve).
        scraped = httpx.get(url + "/metrics").text
        model = 'model="gemma-3-270m"'
        assert f'inferq_jobs_finished_total{{{model},outcome="succeeded"}} 1.0' in scraped
        assert f"inferq_job_ttft_seconds_count{{{model}}} 1.0" in scraped
        assert 'inferq_queue_depth{queue="local.normal"} 0.0' in scraped

        before = cast(
            set[int],
            wait_for(lambda: worker_pids(serve) if len(worker_pids(serve)) == 2 else None),
        )
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> set[int] | None:
            pids = worker_pids(serve)
            return pids if len(pids) == 2 and victim not in pids else None

        assert wait_for(replaced, timeout=15)
        children = psutil.Process(serve.pid).children(recursive=True)
    finally:
        serve.send_signal(signal.SIGINT)
        code = serve.wait(timeout=60)
    assert code == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert not (tmp_path / "data" / "redis.url").exists()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.2)
        return False
