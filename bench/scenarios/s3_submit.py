"""S3, submit path: `POST /v1/jobs` at 32 concurrent clients vs the skeleton's `POST /predict`.

inferq's path does everything it does in production: API key check, validation, rate
limits (the key has limits, set high enough never to bind), the durable row, enqueue.
No worker runs on either side, so only the submit path is measured. Runs alternate and
repeat; the figures are medians.
"""

from __future__ import annotations

from typing import Any

import orjson

from bench.figures import Figure, ScenarioResult, check
from bench.loadgen import Target, closed_loop, run_async
from bench.procs import Meter, self_tree
from bench.profile import Profile
from bench.progress import Progress
from bench.scenarios.s2_throughput import sim_model
from bench.services import Context, start_inferq, start_skeleton
from bench.stats import median, summarize

TITLE = "S3 submit path"
CLIENTS = 32
MODEL = "sim"


def steps(profile: Profile) -> int:
    return 2 * profile.s3_repeats


def run(ctx: Context, profile: Profile, progress: Progress) -> ScenarioResult:
    result = ScenarioResult("S3", TITLE)
    inferq = start_inferq(ctx, "s3-inferq", {MODEL: sim_model(None, 50, 16)}, with_worker=False,
                          extra_env={"INFERQ_MAX_QUEUED_JOBS": "100000000"})
    skeleton = start_skeleton(ctx, 2.0, with_worker=False)
    body = orjson.dumps({
        "model": MODEL, "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 16,
    })
    targets = {
        "inferq": (Target(inferq.url + "/v1/jobs", body, inferq.headers), inferq.trees()),
        "skeleton": (Target(skeleton.url + "/predict", body), skeleton.trees()),
    }
    for target, _ in targets.values():  # warm-up
        run_async(closed_loop(target, CLIENTS, 1.0))
    for repeat in range(profile.s3_repeats):
        for system, (target, trees) in targets.items():
            progress.step(f"S3 {system} submit, {CLIENTS} clients (run {repeat + 1})")
            with Meter({**trees, "redis": ctx.redis_tree, "loadgen": self_tree}) as meter:
                samples, wall = run_async(closed_loop(target, CLIENTS, profile.s3_seconds))
            summary = summarize(samples, wall)
            summary["achieved_rps"] = round(int(summary["ok"] or 0) / wall, 1)
            result.runs.append({
                "system": system, "repeat": repeat, **summary,
                "cpu_seconds": meter.cpu, "cpu_cores": meter.utilisation(),
            })
    result.figures = _figures(result.runs)
    return result


def _median_of(runs: list[dict[str, Any]], system: str, field: str) -> float | None:
    return median([r[field] for r in runs if r["system"] == system])


def _figures(runs: list[dict[str, Any]]) -> list[Figure]:
    rps = _median_of(runs, "inferq", "achieved_rps")
    base_rps = _median_of(runs, "skeleton", "achieved_rps")
    p99 = _median_of(runs, "inferq", "p99_ms")
    base_p99 = _median_of(runs, "skeleton", "p99_ms")
    errors = sum(r["errors"] for r in runs if r["system"] == "inferq")
    return [
        Figure("S3", f"submit req/s @ {CLIENTS} concurrent", "req/s", rps, "skeleton", base_rps,
               "≥ skeleton (goal 3x)",
               check(rps, lambda v: base_rps is not None and v >= base_rps)),
        Figure("S3", f"submit p99 @ {CLIENTS} concurrent", "ms", p99, "skeleton", base_p99,
               "≤ skeleton", check(p99, lambda v: base_p99 is not None and v <= base_p99)),
        Figure("S3", "submit errors", "count", errors, "skeleton",
               sum(r["errors"] for r in runs if r["system"] == "skeleton"), "0",
               check(errors, lambda v: v == 0)),
    ]


__all__ = ["TITLE", "run", "steps"]
