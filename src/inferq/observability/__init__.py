"""Logs, metrics and traces: what an operator reads to know how the service is doing.

* **Logs** (`logs`): structlog renders every line, inferq's own and its libraries'
  (stdlib logging), as one JSON object, or for people under `inferq serve`. The request
  id is bound per request and carried to the worker in the Celery message headers.
* **Metrics** (`metrics`, `collectors`): Prometheus. What only a worker observes (job
  timings, tokens, cost, provider errors, retries, fallbacks, webhook deliveries) lives
  in the worker process and is served by its own HTTP server (`INFERQ_WORKER_METRICS_PORT`)
  so workers on other machines are scraped where they run. The API serves HTTP metrics
  and what it reads at scrape time from the shared stores: queue depth from the broker,
  live jobs from the database, breakers and workers alive from Redis. Under
  `inferq serve` every process writes to one multiprocess directory instead, and the
  API's /metrics shows everything at one address.
* **Traces** (`tracing`): OpenTelemetry, off unless an OTLP endpoint is configured; the
  context rides in the Celery message, so a job is one trace from request to webhook.
"""
