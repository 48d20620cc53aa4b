"""PNG plots of a run: latency CDFs, throughput and jobs in flight over time, RSS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"direct": "tab:gray", "inferq": "tab:blue", "litellm": "tab:orange",
           "skeleton": "tab:red"}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def s1_cdfs(s1: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per mode: a panel per rate, a CDF per system (a repeated rate's first run:
    the repeats' curves lie on top of each other at this scale)."""
    paths = []
    rates = sorted({r["rate"] for r in s1["runs"]})
    for stream in (False, True):
        fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 3.6), squeeze=False)
        for ax, rate in zip(axes[0], rates, strict=True):
            for run in s1["runs"]:
                if (run["rate"] == rate and run["stream"] == stream and run["cdf_ms"]["x"]
                        and run.get("repeat", 0) == 0):
                    ax.plot(run["cdf_ms"]["x"], run["cdf_ms"]["y"], label=run["system"],
                            color=COLOURS.get(run["system"]))
            ax.set_title(f"{rate} req/s offered")
            ax.set_xlabel("time to first token (ms)" if stream else "latency (ms)")
            ax.set_ylabel("fraction of requests")
            ax.grid(alpha=0.3)
            ax.legend()
        mode = "stream" if stream else "nonstream"
        paths.append(_save(fig, out / f"s1_latency_cdf_{mode}.png"))
    return paths


def s2_timelines(s2: dict[str, Any], out: Path) -> list[Path]:
    series = s2["series"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for system in ("inferq", "skeleton"):
        done = series.get(system, {}).get("completed_per_second", [])
        ax.plot(range(len(done)), done, label=system, color=COLOURS[system])
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("jobs completed per second")
    ax.set_title("S2 throughput over time (sim, 2 s per call)")
    ax.grid(alpha=0.3)
    ax.legend()
    throughput = _save(fig, out / "s2_throughput.png")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    inferq = series.get("inferq", {})
    ax.plot(inferq.get("t", []), inferq.get("running", []), color=COLOURS["inferq"])
    ax.set_xlabel("seconds")
    ax.set_ylabel("jobs running in the worker")
    ax.set_title("S2 jobs in flight over time (one worker process)")
    ax.grid(alpha=0.3)
    return [throughput, _save(fig, out / "s2_in_flight.png")]


def s5_rss(s5: dict[str, Any], out: Path) -> list[Path]:
    series = s5["series"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, values in series.get("rss_mb", {}).items():
        ax.plot(series["t"][: len(values)], values, label=name)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("S5 memory while sim jobs pass")
    ax.grid(alpha=0.3)
    ax.legend()
    return [_save(fig, out / "s5_rss.png")]


def draw(scenarios: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Every plot whose scenario ran and produced data."""
    paths: list[Path] = []
    if scenarios.get("S1", {}).get("runs"):
        paths += s1_cdfs(scenarios["S1"], out)
    if scenarios.get("S2", {}).get("series"):
        paths += s2_timelines(scenarios["S2"], out)
    if scenarios.get("S5", {}).get("series"):
        paths += s5_rss(scenarios["S5"], out)
    return paths
