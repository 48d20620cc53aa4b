"""S2, I/O-bound throughput: a burst of `sim` jobs at 2 s per call, one API, one worker.

Jobs go in through `POST /v1/jobs` as fast as they are admitted; figures come from the
job table: end-to-end jobs/s (first created to last finished), the most calls in flight
at once in the worker (from each job's start and finish), and whether every job ran
exactly once (the sim's record of completed calls). The same workload then runs on the
seeds' skeleton (prefork Celery worker with its default concurrency).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.figures import Figure, ScenarioResult, check
from bench.jobs import JobTable, peak_concurrency, per_second, submit_burst
from bench.loadgen import run_async
from bench.procs import Meter, sampling, self_tree
from bench.profile import Profile
from bench.progress import Progress
from bench.services import Context, Inferq, start_inferq, start_skeleton

TITLE = "S2 I/O-bound throughput"
CALL_SECONDS = 2.0
MODEL = "sim-2s"


def steps(profile: Profile) -> int:
    return 2


def sim_model(record: Path | None, latency_ms: float, tokens: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "latency_ms": latency_ms, "tokens_per_second": 1000, "output_tokens": tokens,
    }
    if record is not None:
        params["record_path"] = str(record)
    return {"provider": "sim", "description": "simulated provider (not a model)",
            "params": params}


def job_body(model: str, tokens: int) -> Any:
    def body(i: int) -> bytes:
        return orjson.dumps({
            "model": model,
            "messages": [{"role": "user", "content": f"job {i:07d}"}],
            "max_tokens": tokens,
        })
    return body


def wait_ready(inferq: Inferq, model: str, timeout: float = 60.0) -> None:
    """One job through, so the worker is consuming before anything is timed."""
    headers = inferq.headers
    body = job_body(model, 4)(-1)
    with httpx.Client(base_url=inferq.url, headers=headers, timeout=10) as client:
        job_id = client.post("/v1/jobs", content=body).raise_for_status().json()["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded":
                return
            time.sleep(0.1)
    raise RuntimeError("the worker did not finish a first job in time")


def run(ctx: Context, profile: Profile, progress: Progress) -> ScenarioResult:
    result = ScenarioResult("S2", TITLE)
    progress.step(f"S2 inferq: {profile.s2_jobs} jobs at {CALL_SECONDS:.0f} s per call")
    inferq_run = _run_inferq(ctx, profile)
    progress.step(f"S2 skeleton: {profile.s2_skeleton_jobs} jobs")
    skeleton_run = _run_skeleton(ctx, profile)
    result.runs = [inferq_run, skeleton_run]
    result.series = {
        "inferq": inferq_run.pop("series"), "skeleton": skeleton_run.pop("series"),
    }
    result.figures = _figures(inferq_run, skeleton_run, profile.s2_jobs)
    return result


def _run_inferq(ctx: Context, profile: Profile) -> dict[str, Any]:
    folder = ctx.folder("s2-inferq")
    record = folder / "sim-record.jsonl"
    inferq = start_inferq(
        ctx, "s2-inferq", {MODEL: sim_model(record, CALL_SECONDS * 1000 - 8, 8)},
        concurrency=profile.s2_worker_concurrency,
    )
    wait_ready(inferq, MODEL)
    record.unlink(missing_ok=True)
    table = JobTable(inferq.database_url)
    trees = {**inferq.trees(), "redis": ctx.redis_tree, "loadgen": self_tree}
    n = profile.s2_jobs
    with Meter(trees) as meter, sampling(
        inferq.trees(),
        {"running": table.running}, interval=0.5,
    ) as series:
        burst = run_async(submit_burst(
            inferq.url + "/v1/jobs", inferq.headers, job_body(MODEL, 8), n, clients=64,
        ))
        counts = table.wait_terminal(n + 1, timeout=120 + n / 20)
    timelines = table.timelines()
    claims = table.claims_histogram()
    table.close()
    ctx.fleet.stop_all()
    return _inferq_figures(timelines, counts, claims, record, n, burst, meter, series)


def _inferq_figures(timelines: list[Any], counts: dict[str, int], claims: dict[int, int],
                    record: Path, n: int, burst: Any, meter: Meter, series: Any) -> dict[str, Any]:
    timelines = sorted(timelines)[1:]  # the first job was the readiness check
    origin = timelines[0][0].timestamp()
    finished = [f.timestamp() for _, _, f in timelines if f is not None]
    spans = [(s.timestamp(), f.timestamp()) for _, s, f in timelines if s and f]
    lines = record.read_text().splitlines() if record.exists() else []
    prompts = [json.loads(line)["prompt"] for line in lines]
    elapsed = (max(finished) - origin) if finished else None
    submit_ok = sum(1 for s in burst.samples if s.ok)
    return {
        "system": "inferq",
        "jobs": n,
        "submitted": submit_ok,
        "submit_seconds": round(burst.seconds, 2),
        "submit_retries": burst.retries,
        "statuses": counts,
        "claims": {str(k): v for k, v in claims.items()},
        "calls_recorded": len(prompts),
        "distinct_calls": len(set(prompts)),
        # Jobs whose call completed once, no more (bounded by the jobs that succeeded).
        "exactly_once": min(
            sum(1 for c in Counter(prompts).values() if c == 1), counts.get("succeeded", 0) - 1
        ),
        "seconds": round(elapsed, 2) if elapsed else None,
        "jobs_per_second": round(len(finished) / elapsed, 2) if elapsed else None,
        "peak_in_flight": peak_concurrency(spans),
        "cpu_seconds": meter.cpu,
        "cpu_cores": meter.utilisation(),
        "series": {
            "completed_per_second": per_second(finished, origin),
            "t": series.t,
            "running": series.gauges["running"],
        },
    }


def _run_skeleton(ctx: Context, profile: Profile) -> dict[str, Any]:
    skeleton = start_skeleton(ctx, CALL_SECONDS)
    m = profile.s2_skeleton_jobs
    trees = {**skeleton.trees(), "redis": ctx.redis_tree}
    with httpx.Client(base_url=skeleton.url, timeout=30) as client:
        _wait_celery(client)
        with Meter(trees) as meter:
            start = time.time()
            ids = [client.post("/predict", json={"job": i}).json()["task_id"] for i in range(m)]
            done: dict[str, float] = {}
            deadline = time.monotonic() + 30 + m * CALL_SECONDS * 2
            while len(done) < m and time.monotonic() < deadline:
                for task_id in ids:
                    if task_id not in done and _succeeded(client, task_id):
                        done[task_id] = time.time()
                time.sleep(0.25)
    pool = max(0, len(trees["skeleton-worker"]()) - 1)  # prefork children
    ctx.fleet.stop_all()
    elapsed = max(done.values()) - start if done else None
    return {
        "system": "skeleton",
        "jobs": m,
        "completed": len(done),
        "seconds": round(elapsed, 2) if elapsed else None,
        "jobs_per_second": round(len(done) / elapsed, 3) if elapsed else None,
        "peak_in_flight": pool,
        "cpu_seconds": meter.cpu,
        "cpu_cores": meter.utilisation(),
        "series": {"completed_per_second": per_second(list(done.values()), start)},
    }


def _succeeded(client: httpx.Client, task_id: str) -> bool:
    return bool(client.get(f"/result/{task_id}").json()["status"] == "SUCCESS")


def _wait_celery(client: httpx.Client, timeout: float = 60.0) -> None:
    """One task through the skeleton before timing it."""
    task_id = client.post("/predict", json={"warm": True}).json()["task_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _succeeded(client, task_id):
            return
        time.sleep(0.2)
    raise RuntimeError("the skeleton's worker did not finish a first task in time")


def _figures(inferq: dict[str, Any], skeleton: dict[str, Any], n: int) -> list[Figure]:
    rate = inferq.get("jobs_per_second")
    base = skeleton.get("jobs_per_second")
    times = rate / base if rate and base else None
    return [
        Figure("S2", "calls in flight in one worker (peak)", "calls", inferq["peak_in_flight"],
               "skeleton", skeleton["peak_in_flight"], "≥ 1000",
               check(inferq["peak_in_flight"], lambda v: v >= 1000)),
        Figure("S2", "jobs/s end to end", "jobs/s", rate, "skeleton", base,
               "≥ 167 (goal 500), ≥ 100x skeleton",
               check(rate, lambda v: v >= 167 and (times or 0) >= 100)),
        Figure("S2", "jobs completed exactly once", "jobs", inferq["exactly_once"], "", None,
               f"= {n}", check(inferq["exactly_once"], lambda v: v == n)),
    ]


__all__ = ["TITLE", "job_body", "run", "sim_model", "steps", "wait_ready"]
