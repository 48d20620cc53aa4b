"""The webhook sweep in every worker: arm ended jobs' deliveries, send the due ones.

The schedule lives in `webhook_deliveries`, so a restart loses nothing: whichever worker
sweeps next sends what is due. A finish hook arms a job's delivery the moment a worker
ends it and wakes the sweep, so the usual case does not wait for the interval; the sweep
itself arms whatever ended elsewhere (a cancel in the API, a refused enqueue, a crash
between finishing a job and running its hooks).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import sqlalchemy as sa

from inferq import __version__
from inferq.config import Settings
from inferq.failure_log import FailureLog
from inferq.jobs.schemas import Job
from inferq.jobs.store import utcnow
from inferq.observability.metrics import WEBHOOK_DELIVERIES
from inferq.observability.tracing import PendingParents, tracer
from inferq.webhooks.deliveries import AttemptResult, Claimed, DeliveryStore, parse_schedule
from inferq.webhooks.signing import signed_headers
from inferq.webhooks.ssrf import Allowlist, Target, WebhookRefused, check_url

log = logging.getLogger(__name__)
# Longest error text kept per attempt: enough to say what happened, bounded per row.
MAX_ERROR_CHARS = 500


def event_body(job: Job) -> bytes:
    """The event: the job exactly as `GET /v1/jobs/{id}` shows it, in an envelope."""
    data = job.model_dump(mode="json")
    return orjson.dumps(
        {"type": f"job.{job.status}", "timestamp": data["finished_at"], "data": data}
    )


class WebhookSender:
    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.store = DeliveryStore(engine, parse_schedule(settings.webhook_retry_schedule))
        self.allow = Allowlist.parse(settings.webhook_allow_hosts)
        self.interval = settings.webhook_sweep_interval_seconds
        self.concurrency = max(settings.webhook_concurrency, 1)
        self.grace_seconds = settings.webhook_secret_grace_seconds
        connect = settings.webhook_connect_timeout_seconds
        read = settings.webhook_read_timeout_seconds
        # A claim outlives any attempt: a connect and a read per address tried, plus slack.
        self.lease_seconds = 3 * (connect + 2 * read) + 30
        self.client = httpx.Client(
            timeout=httpx.Timeout(read, connect=connect),
            # Never through a proxy from the environment, never to a redirect target:
            # both would reach addresses the guard did not check.
            trust_env=False,
            follow_redirects=False,
            headers={"user-agent": f"inferq-webhooks/{__version__}"},
        )
        self._parents = PendingParents()
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="inferq-webhook")
        self._stop = threading.Event()
        self._failures = FailureLog(log, "webhook sweep")
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="inferq-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def on_job_finished(self, job: Job) -> None:
        """Finish hook: the job's event is due now."""
        if job.webhook_url is None:
            return
        # Remembered first: the sweep may claim the delivery the moment it is armed.
        self._parents.remember(job.id)
        if self.store.arm_job(job.id):
            self._wake.set()
        else:
            self._parents.forget(job.id)

    def sweep(self) -> int:
        """One pass; returns how many attempts it made."""
        self.store.arm_ended()
        made = 0
        while not self._stop.is_set():
            claimed = self.store.claim_due(self.concurrency, self.lease_seconds)
            list(self._pool.map(self.deliver, claimed))
            made += len(claimed)
            if len(claimed) < self.concurrency:
                break
        return made

    def deliver(self, claimed: Claimed) -> None:
        """Make one attempt and record it; never raises."""
        parent = self._parents.get(claimed.job_id)
        attributes: dict[str, str | int] = {
            "inferq.job_id": claimed.job_id,
            "inferq.attempt": claimed.attempts + 1,
        }
        with tracer.start_as_current_span("webhook.deliver", parent, attributes=attributes):
            outcome = self._deliver(claimed)
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        if outcome != "retrying":
            self._parents.forget(claimed.job_id)

    def _deliver(self, claimed: Claimed) -> str:
        """One attempt: delivered, retrying (another attempt will follow) or failed."""
        started, clock = utcnow(), time.monotonic()
        try:
            status_code, error, final = self._attempt(claimed)
        except Exception as exc:
            log.exception("webhook %s: attempt failed unexpectedly", claimed.id)
            status_code, error, final = None, f"internal error: {type(exc).__name__}", False
        result = AttemptResult(
            started_at=started,
            duration_ms=int((time.monotonic() - clock) * 1000),
            status_code=status_code,
            error=error[:MAX_ERROR_CHARS] if error else None,
            final=final,
        )
        if not self.store.record(claimed, result):
            log.warning("webhook %s: claim lost before its attempt was recorded", claimed.id)
        elif not result.ok:
            log.info(
                "webhook %s attempt %d: %s", claimed.id, claimed.attempts + 1, error or status_code
            )
        if result.ok:
            return "delivered"
        last = result.final or claimed.attempts + 1 >= len(self.store.schedule)
        return "failed" if last else "retrying"

    def _attempt(self, claimed: Claimed) -> tuple[int | None, str | None, bool]:
        """(status code, error, whether no retry can help)."""
        job = self.store.job(claimed.job_id)
        secrets = self.store.signing_secrets(claimed.key_id, self.grace_seconds)
        if job is None or not secrets:
            return None, "nothing to send: the job or the key's secret is gone", True
        try:
            target = check_url(claimed.url, self.allow)
        except WebhookRefused as exc:
            return None, f"refused ({exc.reason}): {exc.detail}", True
        except OSError as exc:
            return None, f"cannot resolve the host: {exc}", False
        body = event_body(job)
        headers = signed_headers(secrets, claimed.id, int(time.time()), body)
        try:
            return self._post(claimed.url, target, headers, body), None, False
        except httpx.TimeoutException as exc:
            return None, f"timeout: {type(exc).__name__}", False
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", False

    def _post(self, url: str, target: Target, headers: dict[str, str], body: bytes) -> int:
        """POST to the addresses the guard checked (not a fresh lookup), first that answers.

        The URL keeps its name for the Host header and, over TLS, for SNI and the
        certificate check; only the connection is pinned.
        """
        original = httpx.URL(url)
        headers = {**headers, "host": original.netloc.decode(), "content-type": "application/json"}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        error: httpx.ConnectError | None = None
        for address in target.addresses:
            pinned = original.copy_with(host=address)
            try:
                with self.client.stream(
                    "POST", pinned, content=body, headers=headers, extensions=extensions
                ) as response:
                    # The status is the answer; the body is never read (it may be huge).
                    return response.status_code
            except httpx.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sweep()
            except Exception as exc:
                self._failures.failed(exc)
            else:
                self._failures.worked()
