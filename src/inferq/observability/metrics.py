"""The metrics inferq's processes observe, and the worker's own /metrics server.

Labels are bounded: model names come from the registry, routes are templates, never a
job id or a key id. Module-level metric objects are how prometheus-client is meant to be
used: each process has its own, and `prometheus_client.multiprocess` merges them under
`inferq serve`.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

from inferq.config import Settings

log = logging.getLogger(__name__)

# Seconds; wide enough for a minute-long backlog or generation, fine enough for TTFT.
_WAIT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 30, 60)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_HTTP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# API process.
HTTP_REQUESTS = Counter(
    "inferq_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "inferq_http_request_duration_seconds",
    "Time to answer an HTTP request (a stream: until it ends)",
    ["method", "route"],
    buckets=_HTTP,
)
JOBS_SUBMITTED = Counter("inferq_jobs_submitted", "Jobs accepted and queued", ["model", "priority"])
ADMISSION_REJECTIONS = Counter(
    "inferq_admission_rejections",
    "Submissions refused by admission control (a key's limit, or a full queue)",
    ["reason"],
)

# Worker processes.
CACHE_LOOKUPS = Counter(
    "inferq_cache_lookups", "Exact response cache lookups of jobs that asked", ["model", "result"]
)
JOBS_FINISHED = Counter(
    "inferq_jobs_finished", "Jobs that reached a terminal state", ["model", "outcome"]
)
QUEUE_WAIT = Histogram(
    "inferq_job_queue_wait_seconds",
    "Time from submission to a worker's first claim",
    ["model"],
    buckets=_WAIT,
)
TTFT = Histogram(
    "inferq_job_ttft_seconds",
    "Time from submission to the first token (queue wait included)",
    ["model"],
    buckets=_TTFT,
)
INTER_TOKEN = Histogram(
    "inferq_job_inter_token_seconds",
    "Time between consecutive streamed deltas of one provider call",
    ["model"],
    buckets=_ITL,
)
JOB_DURATION = Histogram(
    "inferq_job_duration_seconds",
    "Time from a worker's first claim to the job's end",
    ["model"],
    buckets=_WAIT,
)
PROVIDER_ERRORS = Counter(
    "inferq_provider_errors", "Failed provider calls by error kind", ["model", "kind"]
)
RETRIES = Counter("inferq_provider_retries", "Provider calls that repeat a failed one", ["model"])
FALLBACKS = Counter(
    "inferq_provider_fallbacks",
    "Jobs that moved on from `model` to its fallback `fallback`",
    ["model", "fallback"],
)
TOKENS = Counter(
    "inferq_tokens",
    "Tokens used by finished jobs, by the model that served them",
    ["model", "direction"],
)
COST = Counter(
    "inferq_cost_usd", "Cost of finished jobs in US dollars (registry prices)", ["model"]
)
RESULTS_EXPIRED = Counter(
    "inferq_job_results_expired",
    "Finished jobs whose request and answer the result expiry deleted",
)
FILES_EXPIRED = Counter(
    "inferq_files_expired",
    "Files (uploads and batch results) deleted when their expires_at passed",
)
WEBHOOK_DELIVERIES = Counter(
    "inferq_webhook_deliveries",
    "Webhook delivery attempts: delivered, retrying (will try again) or failed (gave up)",
    ["outcome"],
)


def serve_worker_metrics(settings: Settings) -> None:
    """Start this worker's /metrics server if a port is configured (multiprocess mode
    needs none: the API serves everything)."""
    if settings.worker_metrics_port and settings.metrics_multiproc_dir is None:
        start_http_server(settings.worker_metrics_port, addr=settings.host)
        log.info("worker metrics on %s:%d", settings.host, settings.worker_metrics_port)
