"""Chat and completion jobs: the provider call with retries, fallbacks and a breaker.

For each model of the chain (the job's model, then its registry `fallbacks`): skip it if
its endpoint's breaker is open; else call it under the retry policy, streaming deltas into
the job's stream. A retry after text was streamed appends a `reset` event first. A
provider's refusal (4xx) ends the job at once: another model would be refused too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from inferq.config import Settings
from inferq.errors import InferqError, ProviderError, ProviderUnavailable
from inferq.jobs.claims import ClaimedJob, Outcome
from inferq.liveness import StopSignal
from inferq.providers.base import Delta, Finish
from inferq.providers.registry import ModelRegistry, ModelSpec
from inferq.resilience.breaker import CircuitBreaker
from inferq.resilience.retry import Interrupted, RetryPolicy
from inferq.streams import StreamWriter

log = logging.getLogger(__name__)


class CircuitOpen(ProviderError):
    """The model's endpoint is failing; the breaker keeps calls away from it."""

    slug = "circuit-open"
    title = "The provider's circuit breaker is open"
    kind = "circuit_open"


@dataclass
class _Progress:
    """What one job has done so far, across attempts."""

    parts: list[str] = field(default_factory=list)
    streamed: bool = False
    attempts: int = 0


def policy_for(spec: ModelSpec, settings: Settings) -> RetryPolicy:
    """The service's retry policy with the model's overrides."""
    o = spec.retry
    return RetryPolicy(
        max_attempts=(o and o.max_attempts) or settings.retry_max_attempts,
        base_delay=(o and o.base_delay) or settings.retry_base_delay_seconds,
        max_delay=(o and o.max_delay) or settings.retry_max_delay_seconds,
        max_elapsed=(o and o.max_elapsed) or settings.retry_max_elapsed_seconds,
    )


class GenerateHandler:
    def __init__(
        self,
        registry: ModelRegistry,
        breaker: CircuitBreaker,
        settings: Settings,
        count_attempt: Callable[[str], None],
    ) -> None:
        self.registry = registry
        self.breaker = breaker
        self.settings = settings
        self.count_attempt = count_attempt

    def __call__(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome:
        progress = _Progress()
        try:
            chain = [claimed.model, *self.registry.get(claimed.model).fallbacks]
        except InferqError as exc:
            return Outcome("failed", error_type=exc.slug, error_message=exc.detail)
        error: ProviderError = ProviderUnavailable("no model could be tried")
        for model in chain:
            try:
                return self._serve(model, claimed, writer, stop, progress)
            except Interrupted:
                break
            except CircuitOpen as exc:
                error = exc
            except ProviderError as exc:
                error = exc
                if not exc.retryable:
                    break
            log.warning("job %s: model %s gave up (%s); next in chain", claimed.id, model, error)
        return self._stopped(stop, progress) or Outcome(
            "failed",
            "".join(progress.parts) or None,
            error_type=error.kind,
            error_message=error.detail,
        )

    def _serve(
        self,
        model: str,
        claimed: ClaimedJob,
        writer: StreamWriter,
        stop: StopSignal,
        progress: _Progress,
    ) -> Outcome:
        spec = self.registry.get(model)

        def attempt(_: int) -> Outcome:
            if not self.breaker.allow(spec.endpoint):
                raise CircuitOpen(f"the circuit of {spec.endpoint} is open")
            progress.attempts += 1
            if progress.attempts > 1:
                self.count_attempt(claimed.id)
            if progress.streamed:
                writer.reset(claimed.attempts + progress.attempts - 1)
                progress.parts.clear()
                progress.streamed = False
            return self._attempt(model, spec, claimed, writer, stop, progress)

        return policy_for(spec, self.settings).call(attempt, stop)

    def _attempt(
        self,
        model: str,
        spec: ModelSpec,
        claimed: ClaimedJob,
        writer: StreamWriter,
        stop: StopSignal,
        progress: _Progress,
    ) -> Outcome:
        try:
            for event in self.registry.provider(model).stream(claimed.request, stop):
                if isinstance(event, Delta):
                    progress.parts.append(event.text)
                    progress.streamed = True
                    writer.delta(event.text)
                elif isinstance(event, Finish):
                    self.breaker.record(spec.endpoint, ok=True)
                    return self._finished(event, model, stop, progress)
            raise ProviderUnavailable("the provider ended without a finish event")
        except ProviderError as exc:
            # A refusal means the endpoint answered: it is healthy as far as the breaker goes.
            self.breaker.record(spec.endpoint, ok=not exc.retryable)
            raise

    def _finished(
        self, event: Finish, model: str, stop: StopSignal, progress: _Progress
    ) -> Outcome:
        text = "".join(progress.parts)
        stopped = self._stopped(stop, progress)
        if stopped is not None and event.finish_reason == "cancelled":
            return stopped
        return Outcome(
            status="succeeded",
            text=text,
            finish_reason=event.finish_reason,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            served_model=model,
        )

    def _stopped(self, stop: StopSignal, progress: _Progress) -> Outcome | None:
        """The outcome of a job stopped by cancellation or its deadline, else None."""
        text = "".join(progress.parts)
        if stop.reason == "cancelled":
            return Outcome("cancelled", text, finish_reason="cancelled")
        if stop.reason == "timeout":
            limit = self.settings.job_timeout_seconds
            return Outcome(
                "failed",
                text or None,
                finish_reason="timeout",
                error_type="timeout",
                error_message=f"the job ran out of its total time ({limit:g} s)",
            )
        return None
