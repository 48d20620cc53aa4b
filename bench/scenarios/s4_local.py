"""S4, local model: gemma-3-270m through inferq (SSE) vs bare llama-cpp-python.

The same GGUF, the same threads, greedy decoding (temperature 0), the same prompt and
number of tokens. Runs alternate between the two (each holds the model loaded), the
first of each is a warm-up, and the figures are medians. tokens/s counts from the
request's send to its last token, so time to the first token is part of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import IO, Any

import orjson

from bench.figures import Figure, ScenarioResult, check, diff
from bench.loadgen import new_session, run_async
from bench.profile import Profile
from bench.progress import Progress
from bench.services import REPO, Context, Inferq, start_inferq
from bench.stats import median

TITLE = "S4 local model"
MODEL = "gemma-3-270m"
THREADS = 2
PROMPT = "The history of the city of Paris begins"


def steps(profile: Profile) -> int:
    return 2 * profile.s4_runs if profile.s4_runs else 0


def run(ctx: Context, profile: Profile, progress: Progress) -> ScenarioResult:
    result = ScenarioResult("S4", TITLE)
    model = {"provider": "llamacpp", "description": "Gemma 3 270M (GGUF)",
             "params": {"n_ctx": 2048, "n_threads": THREADS}}
    inferq = start_inferq(ctx, "s4-inferq", {MODEL: model}, pool="local", concurrency=1)
    bare = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_llama", "--threads", str(THREADS),
         "--tokens", str(profile.s4_tokens), "--prompt", PROMPT],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert bare.stdout is not None and bare.stdin is not None
        bare.stdout.readline()  # ready
        for i in range(profile.s4_runs + 1):
            warm = i == 0
            progress.step(f"S4 bare llama.cpp run {i}" + (" (warm-up)" if warm else ""))
            result.runs.append({"system": "bare", "warmup": warm, **_bare_run(bare)})
            progress.step(f"S4 inferq run {i}" + (" (warm-up)" if warm else ""))
            result.runs.append({"system": "inferq", "warmup": warm,
                                **run_async(_inferq_run(inferq, profile.s4_tokens))})
    finally:
        bare.terminate()
        bare.wait(timeout=10)
    result.figures = _figures(result.runs)
    return result


def _bare_run(bare: subprocess.Popen[str]) -> dict[str, Any]:
    stdin: IO[str] = bare.stdin  # type: ignore[assignment]
    stdin.write("run\n")
    stdin.flush()
    out = json.loads(bare.stdout.readline())  # type: ignore[union-attr]
    return _rates(out["ttft_s"], out["seconds"], out["tokens"])


def _rates(ttft: float, seconds: float, tokens: int) -> dict[str, Any]:
    return {
        "ttft_ms": round(ttft * 1000, 2),
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2) if seconds else None,
    }


async def _inferq_run(inferq: Inferq, tokens: int) -> dict[str, Any]:
    body = orjson.dumps({
        "model": MODEL, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    })
    first: float | None = None
    usage_tokens = 0
    async with new_session() as session:
        start = time.perf_counter()
        async with session.post(inferq.url + "/v1/completions", data=body,
                                headers=inferq.headers) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                chunk = orjson.loads(line[6:])
                if first is None and chunk["choices"] and chunk["choices"][0].get("text"):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    usage_tokens = int(chunk["usage"]["completion_tokens"])
        end = time.perf_counter()
    return _rates((first or end) - start, end - start, usage_tokens)


def _figures(runs: list[dict[str, Any]]) -> list[Figure]:
    def med(system: str, field: str) -> float | None:
        return median([r[field] for r in runs if r["system"] == system and not r["warmup"]])

    tps, base_tps = med("inferq", "tokens_per_second"), med("bare", "tokens_per_second")
    added = diff(med("inferq", "ttft_ms"), med("bare", "ttft_ms"))
    return [
        Figure("S4", "tokens/s (128 tokens, temperature 0)", "tok/s", tps, "bare llama.cpp",
               base_tps, "≥ 95 % of bare",
               check(tps, lambda v: base_tps is not None and v >= 0.95 * base_tps)),
        Figure("S4", "time to first token", "ms", med("inferq", "ttft_ms"), "bare llama.cpp",
               med("bare", "ttft_ms"), "added ≤ 10 ms",
               check(added, lambda v: v <= 10)),
    ]


__all__ = ["TITLE", "run", "steps"]
