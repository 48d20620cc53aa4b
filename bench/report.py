"""The run's outputs: the terminal table, results.json, report.md, plots, BENCHMARKS.md."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import plots
from bench.machine import one_line

RESULTS = Path(__file__).resolve().parent / "results"
LATEST_DIR = RESULTS / "latest"
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
# Written by hand from profiles (`python -m bench.probe ... --spy`): what dominates each
# missed target. BENCHMARKS.md carries it below the figures.
ANALYSIS_MD = Path(__file__).resolve().parent / "analysis.md"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _met(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


def print_table(results: dict[str, Any], console: Console) -> None:
    table = Table(title=f"inferq benchmark ({results['profile']})", show_lines=False)
    for column in ("scenario", "figure", "inferq", "baseline", "baseline value", "ratio",
                   "target", ""):
        table.add_column(column, overflow="fold")
    for f in results["figures"]:
        style = {True: "green", False: "red", None: None}[f["met"]]
        table.add_row(
            f["scenario"], f"{f['name']} ({f['unit']})", _fmt(f["value"]), f["baseline"],
            _fmt(f["baseline_value"]), _fmt(f["ratio"]), f["target"], _met(f["met"]),
            style=style,
        )
    console.print(table)


def _figures_md(results: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | figure | unit | inferq | baseline | baseline value | ratio | target | |",
        "|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for f in results["figures"]:
        lines.append(
            f"| {f['scenario']} | {f['name']} | {f['unit']} | {_fmt(f['value'])} | "
            f"{f['baseline']} | {_fmt(f['baseline_value'])} | {_fmt(f['ratio'])} | "
            f"{f['target']} | {_met(f['met'])} |"
        )
    return lines


def _cpu_md(results: dict[str, Any]) -> list[str]:
    lines = ["| scenario | run | seconds of CPU per process (cores used on average) |",
             "|---|---|---|"]
    for name, scenario in results["scenarios"].items():
        for run in scenario["runs"]:
            if "cpu_seconds" not in run:
                continue
            label = " ".join(
                str(run[k]) for k in ("system", "rate", "stream", "repeat") if k in run
            )
            cores = run.get("cpu_cores", {})
            cells = ", ".join(
                f"{proc} {sec:.1f} s ({cores.get(proc, 0):.2f})"
                for proc, sec in run["cpu_seconds"].items()
            )
            lines.append(f"| {name} | {label} | {cells} |")
    return lines


def render_markdown(results: dict[str, Any], plot_dir: str) -> str:
    out = [
        "# inferq benchmarks",
        "",
        f"Profile **{results['profile']}**, taken {results['started']} on: "
        f"{one_line(results['machine'])}. inferq's job store: "
        f"{results.get('job_store', 'SQLite')}.",
        "",
        "Regenerate with `make bench` (about 25 minutes; `make bench-quick` for a shorter "
        "run of the same scenarios). Every figure stands beside a baseline measured in the "
        "same run; *ratio* is inferq / baseline. The harness and its baselines live in "
        "`bench/` (see `bench/__init__.py` for what each scenario measures and how).",
        "",
        "## Figures",
        "",
        *_figures_md(results),
        "",
    ]
    notes = [n for s in results["scenarios"].values() for n in s.get("notes", [])]
    if notes:
        out += ["Notes:", "", *(f"* {n}" for n in notes), ""]
    if ANALYSIS_MD.exists():
        out += [ANALYSIS_MD.read_text().strip(), ""]
    out += ["## Plots", ""]
    for plot in results["plots"]:
        out.append(f"![{plot}]({plot_dir}/{plot})")
        out.append("")
    out += [
        "## CPU of every process",
        "",
        "Everything (load generator, mock upstream, gateways, Redis) shares the machine's "
        "cores; the mock upstream's own CPU shows it was never the bottleneck.",
        "",
        *_cpu_md(results),
        "",
    ]
    return "\n".join(out)


def write(results: dict[str, Any], out: Path, publish: bool) -> None:
    """results.json, report.md and plots into `out`; when publishing, also latest.json,
    the plots BENCHMARKS.md embeds, and BENCHMARKS.md itself."""
    out.mkdir(parents=True, exist_ok=True)
    results["plots"] = [p.name for p in plots.draw(results["scenarios"], out)]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(render_markdown(results, "."))
    if not publish:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1))
    shutil.rmtree(LATEST_DIR, ignore_errors=True)
    LATEST_DIR.mkdir()
    for name in results["plots"]:
        shutil.copy(out / name, LATEST_DIR / name)
    BENCHMARKS_MD.write_text(render_markdown(results, "bench/results/latest"))


__all__ = ["print_table", "render_markdown", "write"]
