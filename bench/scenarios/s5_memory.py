"""S5, memory over time: RSS of the API and the worker while many `sim` jobs pass.

Jobs go in through `POST /v1/jobs` from 32 clients while a thread samples each
process's RSS. Growth compares the RSS once a quarter of the run is over (warm-up:
imports, pools and caches filled) with the RSS at the end.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.figures import Figure, ScenarioResult, check
from bench.jobs import JobTable, submit_burst
from bench.loadgen import run_async
from bench.procs import Meter, Series, sampling, self_tree
from bench.profile import Profile
from bench.progress import Progress
from bench.scenarios.s2_throughput import job_body, sim_model, wait_ready
from bench.services import Context, start_inferq

TITLE = "S5 memory over time"
MODEL = "sim-fast"
WARMUP_FRACTION = 0.25
MIN_SAMPLES = 8


def steps(profile: Profile) -> int:
    return 1


def run(ctx: Context, profile: Profile, progress: Progress) -> ScenarioResult:
    result = ScenarioResult("S5", TITLE)
    progress.step(f"S5 {profile.s5_jobs} sim jobs, RSS sampled")
    inferq = start_inferq(ctx, "s5-inferq", {MODEL: sim_model(None, 20, 16)})
    wait_ready(inferq, MODEL)
    table = JobTable(inferq.database_url)
    n = profile.s5_jobs
    interval = 0.5 if n >= 5000 else 0.1
    with Meter({**inferq.trees(), "redis": ctx.redis_tree, "loadgen": self_tree}) as meter, \
            sampling(inferq.trees(), interval=interval) as series:
        run_async(submit_burst(inferq.url + "/v1/jobs", inferq.headers, job_body(MODEL, 16),
                               n, clients=32, deadline_seconds=900))
        counts = table.wait_terminal(n + 1, timeout=300)
        # A small run can end in under a second: the growth needs MIN_SAMPLES.
        while len(series.t) < MIN_SAMPLES:
            time.sleep(interval)
    table.close()
    growth = {name: _growth(series, name) for name in series.rss}
    result.runs.append({
        "system": "inferq", "jobs": n, "statuses": counts, "seconds": round(meter.wall, 1),
        "cpu_seconds": meter.cpu, "cpu_cores": meter.utilisation(), "growth": growth,
    })
    result.series = {"t": series.t, "rss_mb": {
        name: [round(v / 2**20, 1) for v in values] for name, values in series.rss.items()
    }}
    result.figures = [
        Figure("S5", f"RSS growth after warm-up, {name}", "%", g["growth_pct"], "", None,
               "≤ 10 %", check(g["growth_pct"], lambda v: v <= 10))
        for name, g in growth.items()
    ]
    return result


def _growth(series: Series, name: str) -> dict[str, Any]:
    values = series.rss[name]
    if len(values) < MIN_SAMPLES:
        return {"growth_pct": None, "warm_mb": None, "end_mb": None}
    cut = int(len(values) * WARMUP_FRACTION)
    warm = statistics.median(values[max(0, cut - 2): cut + 2])
    end = statistics.median(values[-4:])
    return {
        "growth_pct": round((end - warm) / warm * 100, 2),
        "warm_mb": round(warm / 2**20, 1),
        "end_mb": round(end / 2**20, 1),
        "peak_mb": round(max(values) / 2**20, 1),
    }


__all__ = ["TITLE", "run", "steps"]
