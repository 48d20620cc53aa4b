"""Bare llama-cpp-python on inferq's GGUF: the S4 baseline, in its own process.

Loads the model once, then for each line `run` on stdin streams one completion and
prints one JSON line: time to the first token, total seconds, tokens generated.

    python -m bench.bare_llama --threads 2 --tokens 128 --prompt "..."
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import llama_cpp

from inferq.providers.llamacpp import default_gguf_path


def generate(llm: llama_cpp.Llama, prompt: str, tokens: int) -> dict[str, float]:
    # inferq's worker starts every job from an empty context (so a seeded job's text does
    # not depend on the job before it); so does the baseline. Left in place, the previous
    # run's cache of this same prompt would skip the prompt's evaluation: 12 ms less to the
    # first token here, a saving that only a benchmark repeating one prompt would see.
    llm.reset()  # type: ignore[no-untyped-call]
    start = time.perf_counter()
    first: float | None = None
    count = 0
    chunks = llm.create_completion(
        prompt, stream=True, max_tokens=tokens, temperature=0.0, stop=[]
    )
    for chunk in cast("Iterator[dict[str, Any]]", chunks):
        choice = chunk["choices"][0]
        if choice["text"]:
            first = first or time.perf_counter()
        # One chunk per generated token, then one more with the finish reason and no
        # text: counting that one overstated the baseline's tokens/s by 1/128.
        count += choice["finish_reason"] is None
    end = time.perf_counter()
    return {
        "ttft_s": (first or end) - start,
        "seconds": end - start,
        "tokens": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompt", required=True)
    args = parser.parse_args()
    llm = llama_cpp.Llama(
        model_path=str(default_gguf_path()), n_ctx=args.n_ctx, n_threads=args.threads,
        verbose=False,
    )
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print(json.dumps(generate(llm, args.prompt, args.tokens)), flush=True)


if __name__ == "__main__":
    main()
