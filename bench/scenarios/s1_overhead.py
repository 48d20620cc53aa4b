"""S1, gateway overhead: chat completions through inferq vs the upstream direct vs LiteLLM.

Open loop at each rate, non-stream and stream. inferq runs one API process and one
worker process (queue included); LiteLLM runs two worker processes. Added latency is a
gateway's percentile minus the direct upstream's at the same rate, mode and repeat; for
streams, added time to the first token (the first chunk carrying text). Where a rate is
repeated, a figure is the median of its repeats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from bench.figures import Figure, ScenarioResult, check, diff
from bench.loadgen import Target, open_loop, run_async
from bench.procs import Meter, Proc, self_tree
from bench.profile import Profile
from bench.progress import Progress
from bench.services import (
    UPSTREAM_MODEL,
    Context,
    openai_model,
    start_inferq,
    start_litellm,
    start_upstream,
)
from bench.stats import cdf, errors_by_kind, median, summarize

TITLE = "S1 gateway overhead"
SYSTEMS = ("direct", "inferq", "litellm")


def _body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": UPSTREAM_MODEL,
        "messages": [{"role": "user", "content": "Say something short."}],
        "max_tokens": 64,
        "stream": stream,
    }
    return orjson.dumps(body)


def steps(profile: Profile, with_litellm: bool) -> int:
    systems = 3 if with_litellm else 2
    return systems * 2 * sum(_repeats(profile, rate) for rate in profile.s1_rates)


def _repeats(profile: Profile, rate: int) -> int:
    return profile.s1_repeats.get(rate, 1)


def run(ctx: Context, profile: Profile, progress: Progress, with_litellm: bool) -> ScenarioResult:
    result = ScenarioResult("S1", TITLE)
    upstream, upstream_proc = start_upstream(ctx)
    inferq = start_inferq(ctx, "s1-inferq", {UPSTREAM_MODEL: openai_model(upstream)})
    urls = {"direct": upstream, "inferq": inferq.url + "/v1"}
    headers = {"direct": {}, "inferq": {"Authorization": f"Bearer {inferq.key}"}}
    trees: dict[str, dict[str, Callable[[], list[Any]]]] = {
        "direct": {},
        "inferq": {**inferq.trees(), "redis": ctx.redis_tree},
    }
    if with_litellm:
        litellm = start_litellm(ctx, upstream)
        urls["litellm"] = litellm.url + "/v1"
        headers["litellm"] = {"Authorization": f"Bearer {litellm.key}"}
        trees["litellm"] = {"litellm": litellm.proc.tree}
    else:
        result.notes.append("LiteLLM skipped (--no-litellm, or no .bench/litellm-venv: "
                            "`make bench` sets it up)")
    _warm(urls, headers)
    for rate in profile.s1_rates:
        repeats = _repeats(profile, rate)
        for repeat in range(repeats):
            for stream in (False, True):
                for system in urls:
                    progress.step(f"S1 {system} {'stream' if stream else 'whole'} @ {rate}/s"
                                  + (f" (run {repeat + 1} of {repeats})" if repeats > 1 else ""))
                    target = Target(urls[system] + "/chat/completions", _body(stream),
                                    headers[system], stream=stream)
                    run = _measure(system, target, rate, profile, trees[system], upstream_proc)
                    result.runs.append({**run, "repeat": repeat})
    result.figures = figures(result.runs, profile.s1_rates)
    return result


def _warm(urls: dict[str, str], headers: dict[str, dict[str, str]]) -> None:
    """A few calls per system so connections and lazy imports are in place."""
    for system, url in urls.items():
        for stream in (False, True):
            target = Target(url + "/chat/completions", _body(stream), headers[system],
                            stream=stream)
            run_async(open_loop(target, rate=10, seconds=0.3))


def _measure(system: str, target: Target, rate: int, profile: Profile,
             trees: dict[str, Callable[[], list[Any]]], upstream: Proc) -> dict[str, Any]:
    meter_trees = {**trees, "upstream": upstream.tree, "loadgen": self_tree}
    with Meter(meter_trees) as meter:
        outcome = run_async(
            open_loop(target, rate, profile.s1_seconds, profile.s1_warmup_seconds)
        )
    summary = summarize(outcome.samples, profile.s1_seconds)
    gateway_cpu = sum(v for k, v in meter.cpu.items() if k in trees)
    ok = int(summary["ok"] or 0)
    measured = [s for s in outcome.samples if s.ok and not s.warmup]
    key = "ttft" if target.stream else "latency"
    values = [getattr(s, key) * 1000 for s in measured]
    xs, ys = cdf(values)
    return {
        "system": system,
        "stream": target.stream,
        "rate": rate,
        **summary,
        "error_kinds": errors_by_kind(outcome.samples),
        "cpu_seconds": meter.cpu,
        "cpu_cores": meter.utilisation(),
        # CPU over the whole run (warm-up included) per answered request of the run.
        "gateway_cpu_ms_per_request": (
            round(gateway_cpu * 1000 / max(1, sum(1 for s in outcome.samples if s.ok)), 3)
            if trees else None
        ),
        "cdf_ms": {"x": [round(x, 2) for x in xs], "y": [round(y, 4) for y in ys]},
        "ok_count": ok,
    }


def _find(runs: list[dict[str, Any]], system: str, stream: bool, rate: int,
          repeat: int = 0) -> dict[str, Any]:
    for r in runs:
        if (r["system"] == system and r["stream"] == stream and r["rate"] == rate
                and r.get("repeat", 0) == repeat):
            return r
    return {}


def _repeats_of(runs: list[dict[str, Any]], rate: int) -> range:
    return range(1 + max((r.get("repeat", 0) for r in runs if r["rate"] == rate), default=0))


def _added(runs: list[dict[str, Any]], system: str, stream: bool, rate: int,
           q: str) -> float | None:
    """The median over the rate's repeats of the system's percentile minus direct's."""
    field = f"ttft_{q}_ms" if stream else f"{q}_ms"
    added = [
        diff(_find(runs, system, stream, rate, repeat).get(field),
             _find(runs, "direct", stream, rate, repeat).get(field))
        for repeat in _repeats_of(runs, rate)
    ]
    value = median(added)
    return None if value is None else round(value, 2)


def _median_of(runs: list[dict[str, Any]], system: str, stream: bool, rate: int,
               field: str) -> float | None:
    return median([_find(runs, system, stream, rate, repeat).get(field)
                   for repeat in _repeats_of(runs, rate)])


def _errors(runs: list[dict[str, Any]], system: str, stream: bool, rate: int) -> int | None:
    counts = [_find(runs, system, stream, rate, repeat).get("errors")
              for repeat in _repeats_of(runs, rate)]
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


def _added_target(stream: bool, rate: int, q: str) -> tuple[str, Callable[[float], bool]] | None:
    if q != "p99":
        return None
    if rate == 25:
        return "≤ 10 ms", lambda v: v <= 10
    if (rate == 100 and not stream) or (rate == 50 and stream):
        return "≤ 50 ms", lambda v: v <= 50
    return None


def figures(runs: list[dict[str, Any]], rates: tuple[int, ...]) -> list[Figure]:
    out: list[Figure] = []
    has_litellm = any(r["system"] == "litellm" for r in runs)
    for rate in rates:
        for stream in (False, True):
            mode = "stream TTFT" if stream else "non-stream"
            for q in ("p50", "p99"):
                value = _added(runs, "inferq", stream, rate, q)
                target = _added_target(stream, rate, q)
                out.append(Figure(
                    "S1", f"added {q} {mode} @ {rate}/s", "ms", value,
                    "LiteLLM" if has_litellm else "",
                    _added(runs, "litellm", stream, rate, q) if has_litellm else None,
                    target[0] if target else "",
                    check(value, target[1]) if target else None,
                ))
            zero_needed = (rate == 100 and not stream) or (rate == 50 and stream)
            errors = _errors(runs, "inferq", stream, rate)
            out.append(Figure(
                "S1", f"errors {mode} @ {rate}/s", "count", errors,
                "LiteLLM" if has_litellm else "", _errors(runs, "litellm", stream, rate),
                "0" if zero_needed else "",
                check(errors, lambda v: v == 0) if zero_needed else None,
            ))
            cpu = "gateway_cpu_ms_per_request"
            out.append(Figure(
                "S1", f"gateway CPU per request {mode} @ {rate}/s", "ms",
                _median_of(runs, "inferq", stream, rate, cpu),
                "LiteLLM" if has_litellm else "", _median_of(runs, "litellm", stream, rate, cpu),
            ))
    return out


__all__ = ["TITLE", "run", "steps"]
