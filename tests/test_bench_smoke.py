"""The benchmark harness runs end to end in its smoke size and writes what it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_smoke_writes_results_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "results"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--no-publish",
            "--no-litellm",
            "--no-progress",
            "--only",
            "S1,S2,S3,S5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        timeout=240,
        capture_output=True,
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results["scenarios"]) == {"S1", "S2", "S3", "S5"}
    assert results["machine"]["cores"] >= 1
    figures = {(f["scenario"], f["name"]): f for f in results["figures"]}
    for key in [
        ("S1", "added p99 non-stream @ 25/s"),
        ("S2", "jobs/s end to end"),
        ("S3", "submit req/s @ 32 concurrent"),
    ]:
        assert figures[key]["value"], key
        assert figures[key]["baseline_value"] is not None or key[0] == "S1", key
    # The smoke size repeats 25 req/s twice: each system and mode ran once per repeat.
    s1_runs = results["scenarios"]["S1"]["runs"]
    assert sorted((r["system"], r["stream"], r["repeat"]) for r in s1_runs) == sorted(
        (system, stream, repeat)
        for system in ("direct", "inferq")
        for stream in (False, True)
        for repeat in (0, 1)
    )
    assert figures[("S2", "jobs completed exactly once")]["value"] == 60
    assert all(f["value"] is not None for f in results["figures"] if f["scenario"] == "S5")
    assert (out / "report.md").read_text().startswith("# inferq benchmarks")
    assert {p.name for p in out.glob("*.png")} >= {
        "s1_latency_cdf_nonstream.png",
        "s2_throughput.png",
        "s2_in_flight.png",
        "s5_rss.png",
    }
