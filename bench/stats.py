"""Percentiles and per-run summaries of load-generator samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.loadgen import Sample


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(samples: Sequence[Sample], wall_seconds: float) -> dict[str, float | int | None]:
    """Counts, throughput and latency / time-to-first-token percentiles (ms), warm-up
    samples left out."""
    measured = [s for s in samples if not s.warmup]
    ok = [s for s in measured if s.ok]
    latencies = [s.latency for s in ok if s.latency is not None]
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    intended = [s.intended for s in measured]
    span = max(intended) - min(intended) if intended else 0.0
    return {
        "requests": len(measured),
        "ok": len(ok),
        "errors": len(measured) - len(ok),
        "achieved_rps": round(len(ok) / max(span, wall_seconds, 1e-9), 2) if ok else 0.0,
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else None),
        "ttft_p50_ms": ms(percentile(ttfts, 50)),
        "ttft_p99_ms": ms(percentile(ttfts, 99)),
    }


def cdf(values: Sequence[float], points: int = 200) -> tuple[list[float], list[float]]:
    """Up to `points` (value, fraction at or below) pairs for plotting a CDF."""
    ordered = sorted(values)
    if not ordered:
        return [], []
    step = max(1, len(ordered) // points)
    xs = [*ordered[::step], ordered[-1]]
    ys = [min(1.0, (i * step + 1) / len(ordered)) for i in range(len(xs) - 1)] + [1.0]
    return xs, ys


def errors_by_kind(samples: Sequence[Sample]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for s in samples:
        if not s.warmup and not s.ok:
            kinds[s.error or "no answer"] = kinds.get(s.error or "no answer", 0) + 1
    return kinds


__all__ = ["cdf", "errors_by_kind", "median", "ms", "percentile", "summarize"]
