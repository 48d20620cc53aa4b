"""Embedding jobs on a worker: jobs that arrive together share one model call.

An io worker runs many jobs at once, a thread each. An embedding job's thread hands its
inputs to its model's batcher and waits. The first thread into an empty batch leads it:
it holds the batch open up to `embedding_batch_wait_ms` (less if it fills), then until
the model is free, closes it, makes the one call and hands every job its slice. While a
call runs the next batch fills, so batches grow with load while a lone request waits
only those few milliseconds. A job's inputs are never split across calls; a job with
more inputs than the batch limit gets a call of its own.

Each job's result records the call that served it (`model_call`: an id, how many jobs
and inputs it carried), so batching can be seen from `GET /v1/jobs/{id}`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferq.config import Settings
from inferq.errors import InferqError, ProviderError
from inferq.jobs.claims import ClaimedJob, Outcome
from inferq.liveness import StopSignal
from inferq.providers.embeddings import EmbeddingResult
from inferq.providers.registry import ModelRegistry
from inferq.streams import StreamWriter

EmbedCall = Callable[[list[str]], EmbeddingResult]


@dataclass
class _Batch:
    """Inputs of the jobs that will share one model call, and how that call went."""

    texts: list[str] = field(default_factory=list)
    jobs: int = 0
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    closed: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: EmbeddingResult | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class Served:
    """One job's share of a model call."""

    vectors: list[list[float]]
    prompt_tokens: int
    # The call that served it: {"id", "jobs", "inputs"}.
    call: dict[str, Any]


class EmbedBatcher:
    """Merges concurrent `embed` requests for one model into as few calls as it can."""

    def __init__(self, call: EmbedCall, max_inputs: int, max_wait_seconds: float) -> None:
        self._call = call
        self.max_inputs = max_inputs
        self.max_wait = max_wait_seconds
        self._lock = threading.Lock()  # guards `_open`
        self._calling = threading.Lock()  # one model call at a time
        self._open: _Batch | None = None

    def embed(self, texts: list[str]) -> Served:
        """Vectors for `texts`, from a call shared with whoever joined the same batch.

        Raises what the call raised (a ProviderError from a provider).
        """
        batch, start, leads = self._join(texts)
        if leads:
            self._lead(batch)
        else:
            batch.done.wait()
        return _share(batch, start, len(texts))

    def _join(self, texts: list[str]) -> tuple[_Batch, int, bool]:
        """Add `texts` to the open batch, or open a new one (whose caller leads it)."""
        with self._lock:
            batch = self._open
            if batch is not None and len(batch.texts) + len(texts) <= self.max_inputs:
                leads = False
            else:
                if batch is not None:
                    batch.closed.set()  # it cannot take this job: stop holding it open
                batch = self._open = _Batch()
                leads = True
            start = len(batch.texts)
            batch.texts.extend(texts)
            batch.jobs += 1
            if len(batch.texts) >= self.max_inputs:
                batch.closed.set()
                self._open = None
            return batch, start, leads

    def _lead(self, batch: _Batch) -> None:
        batch.closed.wait(self.max_wait)
        # The batch stays open while an earlier call runs: jobs arriving meanwhile join it.
        with self._calling:
            with self._lock:
                if self._open is batch:
                    self._open = None
            try:
                batch.result = self._call(batch.texts)
            except Exception as exc:
                batch.error = exc
            finally:
                batch.done.set()


def _share(batch: _Batch, start: int, count: int) -> Served:
    if batch.error is not None:
        raise batch.error
    assert batch.result is not None
    call = {"id": batch.call_id, "jobs": batch.jobs, "inputs": len(batch.texts)}
    vectors = batch.result.vectors[start : start + count]
    return Served(vectors, token_share(batch.result, batch.texts, start, count), call)


def token_share(result: EmbeddingResult, texts: list[str], start: int, count: int) -> int:
    """The tokens of texts[start:start+count] in a call that cost `result.prompt_tokens`."""
    if result.input_tokens is not None:
        return sum(result.input_tokens[start : start + count])
    # Only the call's total is known: split it by characters, rounding at cumulative
    # offsets so the jobs' shares add up to exactly the total.
    before = sum(len(t) for t in texts[:start])
    through = before + sum(len(t) for t in texts[start : start + count])
    total = sum(len(t) for t in texts) or 1
    spent = result.prompt_tokens
    return round(spent * through / total) - round(spent * before / total)


class EmbedHandler:
    """Jobs of kind "embed" (payload {"input": [str, ...]}): vectors into the job's result."""

    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.max_inputs = settings.embedding_batch_max_inputs
        self.max_wait = settings.embedding_batch_wait_ms / 1000
        self._batchers: dict[str, EmbedBatcher] = {}
        self._lock = threading.Lock()

    def __call__(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome:
        if stop.is_set():
            return _stopped(stop)
        try:
            served = self._batcher(claimed.model).embed(_inputs(claimed.payload))
        except ProviderError as exc:
            return Outcome("failed", error_type=exc.kind, error_message=exc.detail)
        except InferqError as exc:
            return Outcome("failed", error_type=exc.slug, error_message=exc.detail)
        return Outcome(
            "succeeded",
            prompt_tokens=served.prompt_tokens,
            completion_tokens=0,
            result={"embeddings": served.vectors, "model_call": served.call},
        )

    def vector(self, model: str, text: str) -> list[float]:
        """One text's vector, through the model's batcher (the semantic cache's use)."""
        return self._batcher(model).embed([text]).vectors[0]

    def vectors(self, model: str, texts: list[str]) -> Served:
        """Vectors for `texts`, through the model's batcher (documents to index)."""
        return self._batcher(model).embed(texts)

    def _batcher(self, model: str) -> EmbedBatcher:
        embedder = self.registry.embedder(model)
        with self._lock:
            batcher = self._batchers.get(model)
            if batcher is None:
                batcher = EmbedBatcher(embedder.embed, self.max_inputs, self.max_wait)
                self._batchers[model] = batcher
            return batcher


def _inputs(payload: dict[str, Any]) -> list[str]:
    texts = payload.get("input")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InferqError("the job's payload has no `input` list of strings")
    return texts


def _stopped(stop: StopSignal) -> Outcome:
    if stop.reason == "timeout":
        return Outcome(
            "failed",
            finish_reason="timeout",
            error_type="timeout",
            error_message="the job ran out of its total time",
        )
    return Outcome("cancelled", finish_reason="cancelled")
