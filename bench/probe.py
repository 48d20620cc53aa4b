"""Profile a hot path: `python -m bench.probe s1|s2|s3|s4|acks [--rate N] [--jobs N]
[--seconds S] [--stream] [--spy] [--spy-worker] [--spy-api]`.

Starts what the benchmark starts (mock upstream, one inferq API and one worker) and
prints the added latency, each process's CPU per request and, for S1, queue wait and run
time read from the job rows; S2 submits a burst of `--jobs` 2-second `sim` jobs; S4
streams 128-token completions of the local model for `--seconds` and prints each
process's CPU per token. With `--spy`, py-spy records the stacks holding the GIL in the
worker (S1 unless `--spy-api`, S2) or the API (S3; S4 unless `--spy-worker`)
and prints the heaviest frames, inclusive. This is where the profiles in
`bench/analysis.md` come from. py-spy slows the process it samples (a spied S2 worker
with a thousand threads runs several times slower): read its shares, not its rates.
`acks` measures the broker's acks-late bookkeeping alone (see `bench.acks`).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bench import acks
from bench.loadgen import Target, closed_loop, open_loop, run_async
from bench.procs import Fleet, Meter, self_tree
from bench.scenarios.s1_overhead import _body
from bench.scenarios.s2_throughput import sim_model
from bench.services import (
    UPSTREAM_MODEL,
    Context,
    openai_model,
    redis_server,
    start_inferq,
    start_upstream,
)
from bench.stats import percentile, summarize


def _spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or "py-spy"
    return subprocess.Popen(
        [spy, "record", "--gil", "--format", "raw", "-r", "100", "-o", str(out),
         "-p", str(pid), "-d", str(int(seconds) + 1)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def heaviest(raw: Path, top: int = 40) -> list[tuple[float, str]]:
    """(share of samples, frame) for the frames most often on the stack."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
            counts[frame] += int(n)
    return [(v / max(total, 1), k) for k, v in counts.most_common(top)]


def _print_profile(raw: Path) -> None:
    skip = ("threading.py", "runpy", "typer", "click", "bootstrap", "asyncio/")
    for share, frame in heaviest(raw, 120):
        if not any(s in frame for s in skip):
            print(f"{share * 100:5.1f}% {frame[:140]}")


def _show_profile(spy: subprocess.Popen[bytes] | None, raw: Path) -> None:
    if spy is not None:
        spy.wait()
        _print_profile(raw)


def _cpu_per(meter: Meter, count: int, digits: int) -> dict[str, float]:
    """Each process's CPU milliseconds per request, job or token."""
    return {k: round(v * 1000 / count, digits) for k, v in meter.cpu.items()}


def _job_times(database_url: str) -> str:
    from inferq.db.engine import sync_url
    from inferq.db.tables import jobs

    engine = sa.create_engine(sync_url(database_url))
    query = sa.select(jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at).where(
        jobs.c.finished_at.is_not(None))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    engine.dispose()
    waits = [(r.started_at - r.created_at).total_seconds() for r in rows if r.started_at]
    runs = [(r.finished_at - r.started_at).total_seconds() for r in rows if r.started_at]
    if not rows:
        return "no jobs"
    wait, run = percentile(waits, 50) or 0.0, percentile(runs, 50) or 0.0
    return f"queue wait p50 {wait * 1000:.1f} ms, run p50 {run * 1000:.1f} ms ({len(rows)} jobs)"


def s1(ctx: Context, args: argparse.Namespace) -> None:
    upstream, upstream_proc = start_upstream(ctx)
    inferq = start_inferq(ctx, "probe", {UPSTREAM_MODEL: openai_model(upstream)})
    auth = {"Authorization": f"Bearer {inferq.key}"}
    targets = {
        "direct": (Target(upstream + "/chat/completions", _body(args.stream), {},
                          stream=args.stream), {}),
        "inferq": (Target(inferq.url + "/v1/chat/completions", _body(args.stream), auth,
                          stream=args.stream), inferq.trees()),
    }
    key = "ttft_" if args.stream else ""
    seen: dict[str, Any] = {}
    for name, (target, trees) in targets.items():
        run_async(open_loop(target, rate=10, seconds=0.5))
        raw = ctx.root / f"{name}.spy"
        spied = inferq.api if args.spy_api else inferq.worker
        spy = _spy(spied.popen.pid, args.seconds, raw) if (
            (args.spy or args.spy_api) and name == "inferq" and spied) else None
        with Meter({**trees, "upstream": upstream_proc.tree, "loadgen": self_tree}) as meter:
            outcome = run_async(open_loop(target, args.rate, args.seconds, 1.0))
        summary = summarize(outcome.samples, args.seconds)
        ok = max(1, sum(1 for s in outcome.samples if s.ok))
        seen[name] = summary
        cpu = _cpu_per(meter, ok, 2)
        print(f"{name}: ok {summary['ok']} errors {summary['errors']} "
              f"p50 {summary[key + 'p50_ms']} ms p99 {summary[key + 'p99_ms']} ms; "
              f"CPU ms per request {cpu}")
        _show_profile(spy, raw)
    added = [seen["inferq"][key + q] - seen["direct"][key + q] for q in ("p50_ms", "p99_ms")]
    print(f"added p50 {added[0]:.1f} ms, p99 {added[1]:.1f} ms; {_job_times(inferq.database_url)}")


def s3(ctx: Context, args: argparse.Namespace) -> None:
    inferq = start_inferq(ctx, "probe", {"sim": sim_model(None, 50, 16)}, with_worker=False,
                          extra_env={"INFERQ_MAX_QUEUED_JOBS": "100000000"})
    body = orjson.dumps({"model": "sim", "max_tokens": 16,
                         "messages": [{"role": "user", "content": "Name three colours."}]})
    target = Target(inferq.url + "/v1/jobs", body, inferq.headers)
    run_async(closed_loop(target, 32, 1.0))
    raw = ctx.root / "api.spy"
    spy = _spy(inferq.api.popen.pid, args.seconds, raw) if args.spy else None
    with Meter({**inferq.trees(), "loadgen": self_tree}) as meter:
        samples, wall = run_async(closed_loop(target, 32, args.seconds))
    summary = summarize(samples, wall)
    ok = max(1, int(summary["ok"] or 0))
    cpu = _cpu_per(meter, ok, 3)
    print(f"submit: {ok / wall:.0f} req/s, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} "
          f"ms, errors {summary['errors']}; CPU ms per request {cpu}")
    _show_profile(spy, raw)


def s2(ctx: Context, args: argparse.Namespace) -> None:
    from bench.jobs import JobTable, peak_concurrency, submit_burst
    from bench.scenarios.s2_throughput import CALL_SECONDS, MODEL, job_body, wait_ready

    inferq = start_inferq(ctx, "probe", {MODEL: sim_model(None, CALL_SECONDS * 1000 - 8, 8)},
                          concurrency=args.concurrency)
    wait_ready(inferq, MODEL)
    table = JobTable(inferq.database_url)
    raw = ctx.root / "worker.spy"
    spy = _spy(inferq.worker.popen.pid, args.seconds, raw) if (
        args.spy and inferq.worker) else None
    with Meter({**inferq.trees(), "loadgen": self_tree}) as meter:
        burst = run_async(submit_burst(inferq.url + "/v1/jobs", inferq.headers,
                                       job_body(MODEL, 8), args.jobs, clients=64))
        counts = table.wait_terminal(args.jobs + 1, timeout=120 + args.jobs / 20)
    spans = table.timelines()
    table.close()
    finished = sorted(f.timestamp() for _, _, f in spans if f is not None)[1:]
    created = sorted(c.timestamp() for c, _, _ in spans)[1:]
    seconds = max(finished) - min(created)
    cpu = _cpu_per(meter, args.jobs, 2)
    peak = peak_concurrency([(s.timestamp(), f.timestamp()) for _, s, f in spans if s and f])
    print(f"jobs: {args.jobs} in {seconds:.1f} s = {len(finished) / seconds:.1f} jobs/s "
          f"(submitted in {burst.seconds:.1f} s); peak in flight {peak}; {counts}; "
          f"CPU ms per job {cpu}")
    _show_profile(spy, raw)


def s4(ctx: Context, args: argparse.Namespace) -> None:
    from bench.scenarios.s4_local import MODEL, THREADS, _inferq_run

    model = {"provider": "llamacpp", "params": {"n_ctx": 2048, "n_threads": THREADS}}
    inferq = start_inferq(ctx, "probe", {MODEL: model}, pool="local", concurrency=1)
    run_async(_inferq_run(inferq, 16))  # warm-up
    # --spy: the API by default (the worker's time is mostly the model's, in C).
    target = inferq.worker if args.spy_worker and inferq.worker else inferq.api
    raw = ctx.root / "s4.spy"
    spy = _spy(target.popen.pid, args.seconds, raw) if args.spy else None
    runs = []
    with Meter({**inferq.trees(), "redis": ctx.redis_tree, "loadgen": self_tree}) as meter:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            runs.append(run_async(_inferq_run(inferq, 128)))
    tokens = sum(r["tokens"] for r in runs)
    cpu = _cpu_per(meter, max(tokens, 1), 3)
    print(f"{len(runs)} runs: tokens/s {[r['tokens_per_second'] for r in runs]}, "
          f"ttft ms {[r['ttft_ms'] for r in runs]}; CPU ms per token {cpu}")
    _show_profile(spy, raw)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__)
    parser.add_argument("scenario", choices=("s1", "s2", "s3", "s4", "acks"))
    parser.add_argument("--rate", type=int, default=25, help="S1 requests per second")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--jobs", type=int, default=3000, help="S2 burst size")
    parser.add_argument("--concurrency", type=int, default=1200, help="S2 worker threads")
    parser.add_argument("--spy-worker", action="store_true", help="S4: spy on the worker")
    parser.add_argument("--spy-api", action="store_true", help="S1: spy on the API")
    parser.add_argument("--stream", action="store_true", help="S1: streamed completions")
    parser.add_argument("--spy", action="store_true", help="profile with py-spy")
    parser.add_argument("--redis-url", help="a Redis to use (no db number); default: embedded")
    parser.add_argument("--database-url", default=os.environ.get("INFERQ_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="inferq-probe-"))
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    with redis_server(root, args.redis_url) as (redis_base, redis_tree):
        ctx = Context(root, Fleet(root), redis_base, args.database_url, "INFO", redis_tree)
        try:
            if args.scenario == "acks":
                acks.run(redis_base, args.jobs)
                return
            {"s1": s1, "s2": s2, "s3": s3, "s4": s4}[args.scenario](ctx, args)
        finally:
            ctx.fleet.stop_all()


if __name__ == "__main__":
    main()
