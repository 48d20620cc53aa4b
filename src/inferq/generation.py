"""Chat and completion jobs: the provider call with retries, fallbacks and a breaker.

For each model of the chain (the job's model, then its registry `fallbacks`): skip it if
its endpoint's breaker is open; else call it under the retry policy, streaming deltas into
the job's stream. A retry after text was streamed appends a `reset` event first. A
provider's refusal (4xx) ends the job at once: another model would be refused too.
"""

from __future__ import annotations

import logging
import time
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

    def __init__(self, detail: str, wait: float) -> None:
        super().__init__(detail)
        self.wait = wait


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
        waited_until = time.monotonic() + self.settings.breaker_wait_seconds
        while True:
            outcome, error = self._walk_chain(chain, claimed, writer, stop, progress)
            if outcome is not None:
                return outcome
            # Every model's circuit is open: a queued job waits for one to half-open
            # rather than fail with the whole backlog in the first second of an outage.
            if not isinstance(error, CircuitOpen) or time.monotonic() >= waited_until:
                break
            log.info("job %s: every circuit open; waiting %.1f s", claimed.id, error.wait)
            pause = min(error.wait, max(waited_until - time.monotonic(), 0.05))
            if stop.wait(pause):
                break
        error = error or ProviderUnavailable("no model could be tried")
        return self._stopped(stop, progress) or Outcome(
            "failed",
            "".join(progress.parts) or None,
            error_type=error.kind,
            error_message=error.detail,
        )

    def _walk_chain(
        self,
        chain: list[str],
        claimed: ClaimedJob,
        writer: StreamWriter,
        stop: StopSignal,
        progress: _Progress,
    ) -> tuple[Outcome | None, ProviderError | None]:
        """Try each model in turn; the outcome, or the error that ended the walk.

        The error is a CircuitOpen (waiting the shortest time) only when every model was
        skipped for an open circuit.
        """
        failed: ProviderError | None = None
        shut: list[CircuitOpen] = []
        for model in chain:
            try:
                return self._serve(model, claimed, writer, stop, progress), None
            except Interrupted:
                return None, failed
            except CircuitOpen as exc:
                shut.append(exc)
                error: ProviderError = exc
            except ProviderError as exc:
                error = failed = exc
                if not exc.retryable:
                    return None, failed
            log.warning("job %s: model %s gave up (%s); next in chain", claimed.id, model, error)
        if failed is None and shut:
            return None, min(shut, key=lambda exc: exc.wait)
        return None, failed

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
            entry = self.breaker.enter(spec.endpoint)
            if entry.wait:
                raise CircuitOpen(f"the circuit of {spec.endpoint} is open", entry.wait)
            progress.attempts += 1
            if progress.attempts > 1:
                self.count_attempt(claimed.id)
            if progress.streamed:
                writer.reset(claimed.attempts + progress.attempts - 1)
                progress.parts.clear()
                progress.streamed = False
            return self._attempt(model, spec, entry.probe, claimed, writer, stop, progress)

        return policy_for(spec, self.settings).call(attempt, stop)

    def _attempt(
        self,
        model: str,
        spec: ModelSpec,
        probe: bool,
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
                    if probe:  # else a success changes nothing: one round trip saved
                        self.breaker.record(spec.endpoint, ok=True)
                    return self._finished(event, model, stop, progress)
            raise ProviderUnavailable("the provider ended without a finish event")
        except ProviderError as exc:
            # A refusal means the endpoint answered: it is healthy as far as the breaker goes.
            state = self.breaker.record(spec.endpoint, ok=not exc.retryable)
            log.info(
                "job %s: %s failed (%s: %s); circuit %s",
                claimed.id,
                model,
                exc.kind,
                exc.detail,
                state,
            )
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
