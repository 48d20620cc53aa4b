"""Run the benchmark: `python -m bench [--quick|--smoke] [--only S1,S3] [--out DIR]`."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import report
from bench.figures import ScenarioResult
from bench.machine import describe
from bench.procs import Fleet
from bench.profile import FULL, PROFILES, Profile
from bench.progress import Progress
from bench.scenarios import s1_overhead, s2_throughput, s3_submit, s4_local, s5_memory
from bench.services import REPO, Context, litellm_available, redis_server

ALL = ("S1", "S2", "S3", "S4", "S5")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs (under 3 minutes)")
    size.add_argument("--smoke", action="store_true", help="seconds per scenario (tests)")
    parser.add_argument("--only", default=",".join(ALL), help="e.g. S1,S3")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<ts>)")
    parser.add_argument("--no-publish", action="store_true",
                        help="leave latest.json and BENCHMARKS.md alone")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM baseline")
    parser.add_argument("--redis-url", help="a Redis to use (no db number); default: embedded")
    parser.add_argument(
        "--database-url", default=os.environ.get("INFERQ_BENCH_DATABASE_URL"),
        help="PostgreSQL admin URL (or INFERQ_BENCH_DATABASE_URL); default: SQLite files",
    )
    parser.add_argument("--log-level", default="INFO", help="inferq's log level (INFO)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _profile(args: argparse.Namespace) -> Profile:
    if args.smoke:
        return PROFILES["smoke"]
    return PROFILES["quick"] if args.quick else FULL


def _plan(selected: list[str], profile: Profile, with_litellm: bool) -> list[
        tuple[str, int, Callable[[Context, Progress], ScenarioResult]]]:
    table: dict[str, tuple[int, Callable[[Context, Progress], ScenarioResult]]] = {
        "S1": (s1_overhead.steps(profile, with_litellm),
               lambda c, p: s1_overhead.run(c, profile, p, with_litellm)),
        "S2": (s2_throughput.steps(profile), lambda c, p: s2_throughput.run(c, profile, p)),
        "S3": (s3_submit.steps(profile), lambda c, p: s3_submit.run(c, profile, p)),
        "S4": (s4_local.steps(profile), lambda c, p: s4_local.run(c, profile, p)),
        "S5": (s5_memory.steps(profile), lambda c, p: s5_memory.run(c, profile, p)),
    }
    return [(name, *table[name]) for name in selected if table[name][0] > 0]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    profile = _profile(args)
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    selected = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = set(selected) - set(ALL)
    if unknown:
        console.print(f"unknown scenarios: {', '.join(sorted(unknown))}")
        return 2
    with_litellm = litellm_available() and not args.no_litellm
    started = dt.datetime.now(dt.UTC)
    out = args.out or report.RESULTS / started.strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "profile": profile.name,
        "started": started.isoformat(timespec="seconds"),
        "machine": describe(REPO),
        "job_store": "PostgreSQL" if args.database_url else "SQLite",
        "scenarios": {},
        "figures": [],
    }
    plan = _plan(selected, profile, with_litellm)
    failed = _run_plan(plan, results, args, console)
    results["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    # Only a full run replaces BENCHMARKS.md and bench/results/latest*.
    publish = not args.no_publish and not failed and profile.name == "full"
    report.write(results, out, publish=publish)
    report.print_table(results, console)
    console.print(f"results: {out}/results.json, report.md and plots"
                  f" ({results['seconds']:.0f} s)")
    return 1 if failed else 0


def _run_plan(plan: list[tuple[str, int, Callable[[Context, Progress], ScenarioResult]]],
              results: dict[str, Any], args: argparse.Namespace, console: Console) -> bool:
    """Run each scenario with its own processes; returns whether any failed."""
    failed = False
    work = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
    os.environ.setdefault("PYTHONPATH", str(REPO))
    total = sum(steps for _, steps, _ in plan)
    with redis_server(work, args.redis_url) as (redis_base, redis_tree), Progress(
        total, console, enabled=not args.no_progress
    ) as progress:
        ctx = Context(work, Fleet(work), redis_base, args.database_url, args.log_level,
                      redis_tree)
        for name, _, scenario in plan:
            begin = time.monotonic()
            try:
                result = scenario(ctx, progress)
            except Exception:
                failed = True
                progress.log(f"[red]{name} failed[/red]:\n{traceback.format_exc()}")
                result = ScenarioResult(name, name, notes=[f"{name} failed; see the log"])
            finally:
                ctx.fleet.stop_all()
            result.seconds = time.monotonic() - begin
            results["scenarios"][name] = result.as_dict()
            results["figures"] += [f.as_dict() for f in result.figures]
    results["work_dir"] = str(work)
    return failed


if __name__ == "__main__":
    sys.exit(main())
