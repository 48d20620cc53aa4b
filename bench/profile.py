"""How long and how big each scenario runs: full (`make bench`), quick and smoke."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # S1: gateway overhead, open loop.
    s1_rates: tuple[int, ...]
    s1_seconds: float
    s1_warmup_seconds: float
    # Runs per rate where not 1: each repeat runs every system and mode once, in turn,
    # and a figure is the median of the repeats' added latencies. 25 req/s is repeated
    # because its 10 ms target sits inside one run's spread (a 30 s run's p99 rests on
    # its slowest 7 or 8 requests).
    s1_repeats: dict[int, int]
    # S2: a burst of sim jobs at 2 s per call.
    s2_jobs: int
    s2_skeleton_jobs: int
    s2_worker_concurrency: int
    # S3: submit path, closed loop of 32 clients, repeated.
    s3_seconds: float
    s3_repeats: int
    # S4: local model, repeated runs (0 skips it).
    s4_runs: int
    s4_tokens: int
    # S5: memory while sim jobs pass.
    s5_jobs: int


FULL = Profile(
    name="full",
    s1_rates=(25, 50, 100),
    s1_seconds=30,
    s1_warmup_seconds=5,
    s1_repeats={25: 3},
    s2_jobs=5000,
    s2_skeleton_jobs=20,
    s2_worker_concurrency=1200,
    s3_seconds=15,
    s3_repeats=3,
    s4_runs=5,
    s4_tokens=128,
    s5_jobs=20_000,
)

QUICK = Profile(
    name="quick",
    s1_rates=(25, 50, 100),
    s1_seconds=1,
    s1_warmup_seconds=0.3,
    s1_repeats={},
    s2_jobs=400,
    s2_skeleton_jobs=2,
    s2_worker_concurrency=1200,
    s3_seconds=3,
    s3_repeats=1,
    s4_runs=1,
    s4_tokens=64,
    s5_jobs=400,
)

# Seconds per scenario: checks that the harness runs and writes what it should.
SMOKE = Profile(
    name="smoke",
    s1_rates=(25,),
    s1_seconds=1,
    s1_warmup_seconds=0.3,
    s1_repeats={25: 2},
    s2_jobs=60,
    s2_skeleton_jobs=1,
    s2_worker_concurrency=256,
    s3_seconds=1.0,
    s3_repeats=1,
    s4_runs=0,
    s4_tokens=16,
    s5_jobs=100,
)

PROFILES = {p.name: p for p in (FULL, QUICK, SMOKE)}
