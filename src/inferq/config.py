"""Settings: the only place that reads the environment."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PRIORITIES = ("high", "normal", "low")
EMBEDDED_REDIS_URL_FILE = "redis.url"


class Settings(BaseSettings):
    """Every tunable of inferq, read from `INFERQ_*` variables and an optional `.env`."""

    model_config = SettingsConfigDict(env_prefix="INFERQ_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".inferq")
    host: str = "127.0.0.1"
    port: int = 8000
    api_url: str | None = None
    api_key: SecretStr | None = None
    bootstrap_key: SecretStr | None = None

    redis_url: str | None = None
    broker_url: str | None = None
    database_url: str | None = None
    # Connections one process (the API, each worker) opens to PostgreSQL, at most. Keep
    # processes times this under the server's max_connections (100 by default); requests and
    # jobs wait their turn for one beyond it.
    database_pool_size: int = Field(default=20, ge=2)
    models_file: Path | None = None

    # Limits on what a request may ask for.
    max_body_bytes: int = 1_048_576
    max_prompt_chars: int = 200_000
    max_messages: int = 256
    max_message_chars: int = 100_000
    max_tokens_limit: int = 4096
    max_stop_sequences: int = 4
    max_metadata_keys: int = 16
    max_metadata_value_chars: int = 512

    # Jobs and their hot data.
    result_ttl_seconds: int = 3600
    # How long a finished job keeps its request and answer in the database (0: for good).
    # The row stays for usage and status; a batch or webhook still reading it waits.
    # Batch input and result files default to it too (`inferq.files.expiry`).
    result_retention_seconds: int = Field(default=30 * 86400, ge=0)
    result_expiry_interval_seconds: float = Field(default=60.0, gt=0)
    # How long an answer stays in the exact response cache (jobs with `cache: "exact"`).
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    # The semantic cache (`cache: "semantic"`): the registry's embedding model that
    # compares prompts (None turns it off), how alike two prompts must be (cosine), and
    # how many answers it compares a prompt with, per key, model and parameters.
    semantic_cache_model: str | None = "all-minilm-l6-v2"
    semantic_cache_threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    semantic_cache_entries: int = Field(default=500, ge=1)
    # Retrieval (`rag` on a chat job, documents under /v1/collections): the registry's
    # embedding model that indexes documents and queries (None turns it off).
    rag_embedding_model: str | None = "all-minilm-l6-v2"
    # A longer document is indexed in pieces of at most this many characters (all-MiniLM
    # reads about 1,000 characters of English, 256 word pieces), each overlapping the
    # one before: a question finds the piece that answers it, and only that piece goes
    # before it.
    rag_chunk_chars: int = Field(default=1000, ge=100)
    rag_chunk_overlap: int = Field(default=100, ge=0)
    # Total time a job may take, across attempts and fallbacks (a model may set its own).
    job_timeout_seconds: int = 600
    # How many times a job may be delivered to a worker that then died.
    max_attempts: int = 3

    # The retry policy for provider calls (a model may override it in the registry).
    retry_max_attempts: int = 3
    retry_base_delay_seconds: float = 0.5
    retry_max_delay_seconds: float = 20.0
    retry_max_elapsed_seconds: float = 120.0

    # Admission control: per-key defaults (a key's own limits win; None = unlimited) and
    # the most queued jobs the service accepts before answering 503.
    default_rpm_limit: int | None = None
    default_tpm_limit: int | None = None
    default_max_active_jobs: int | None = None
    max_queued_jobs: int | None = 100_000
    # How long the API trusts a key lookup: a revocation or a change of a key's limits
    # takes effect within this many seconds.
    key_cache_seconds: float = Field(default=5.0, gt=0)

    # Circuit breaker per provider endpoint, shared through Redis.
    breaker_failure_threshold: float = 0.5
    breaker_min_calls: int = 10
    breaker_window_seconds: float = 30.0
    breaker_open_seconds: float = 15.0
    breaker_half_open_probes: int = 2
    # How long a worker trusts a closed circuit before asking Redis again; the calls it
    # starts meanwhile are counted locally and sent with its next question or failure.
    # 0 asks on every call.
    breaker_closed_trust_seconds: float = Field(default=0.25, ge=0)
    # How long a job whose every model has an open circuit waits for one to half-open.
    breaker_wait_seconds: float = 60.0
    sse_ping_seconds: float = 15.0
    # A worker sends a job's text to its stream at most this often (the first piece at
    # once, the rest held and sent together): a token per Redis write and per SSE event
    # cost more CPU than the model call itself on a busy worker, and 50 ms is below what
    # a reader of streamed text notices. 0 sends every token as it comes.
    stream_flush_ms: float = Field(default=50.0, ge=0)
    # OpenAI-style routes: how long a non-stream request waits for its job before it
    # answers 504 naming the job id, and what a streaming client's disconnect does.
    sync_wait_seconds: float = 120.0
    stream_disconnect: Literal["cancel", "continue"] = "cancel"

    # `POST /v1/embeddings`: inputs per request (OpenAI's limit) and characters per input.
    max_embedding_inputs: int = 2048
    max_embedding_input_chars: int = 32_000
    # Workers merge embedding jobs that arrive together into one model call of at most
    # this many inputs, holding the first for at most this long while others join.
    embedding_batch_max_inputs: int = 64
    embedding_batch_wait_ms: float = 5.0

    # Files and batches (OpenAI's limits: 200 MB files, 50,000 requests per batch).
    max_file_bytes: int = 100 * 1024 * 1024
    max_batch_requests: int = 50_000

    # Webhooks. Hosts, addresses or CIDRs (comma-separated) webhooks may reach even though
    # they are loopback, private, link-local...; by default none are.
    webhook_allow_hosts: str = ""
    # Seconds to wait before each attempt (the first counts from the job's end); their
    # number is the number of attempts. Standard Webhooks' suggestion: about 18 hours.
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000"
    webhook_connect_timeout_seconds: float = 5.0
    webhook_read_timeout_seconds: float = 15.0
    webhook_sweep_interval_seconds: float = 1.0
    # Deliveries one worker sends at once.
    webhook_concurrency: int = 8
    # After a rotation the old secret also signs for this long, so receivers can switch.
    webhook_secret_grace_seconds: float = 86_400.0

    # Workers.
    io_concurrency: int = 256
    local_concurrency: int = 1
    heartbeat_seconds: float = 1.0
    worker_ttl_seconds: float = 6.0
    reaper_interval_seconds: float = 2.0
    # A job queued this long while its pool's queues are empty lost its message.
    orphan_after_seconds: float = 30.0

    # `inferq serve`.
    serve_io_workers: int = 1
    serve_local_workers: int = 1

    log_level: str = "INFO"
    # json: one JSON object per line; console: for people (what `inferq serve` uses
    # unless this is set).
    log_format: Literal["json", "console"] | None = None
    # Put prompt and output text in the job log lines (debugging only: they hold user data).
    log_content: bool = False

    # Observability. A worker serves its own /metrics on this port (0: off); under
    # `inferq serve` every process writes to the multiprocess directory instead and the
    # API's /metrics shows them all.
    worker_metrics_port: int = 0
    # Count and time every HTTP request (off only to measure what that costs).
    request_metrics: bool = True
    metrics_multiproc_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR")
    )
    # Traces go to this OTLP/HTTP endpoint; none configured, tracing is off.
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("INFERQ_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    )

    @cached_property
    def resolved_redis_url(self) -> str:
        """The configured Redis, else the one `inferq serve` embedded under the data dir."""
        if self.redis_url:
            return self.redis_url
        url_file = self.data_dir / EMBEDDED_REDIS_URL_FILE
        if url_file.exists():
            return url_file.read_text().strip()
        return "redis://127.0.0.1:6379/0"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or self.resolved_redis_url

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'inferq.db').resolve()}"

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}"

    @property
    def visibility_timeout_seconds(self) -> int:
        """Longer than any job may run, so the broker never redelivers a live job."""
        return self.job_timeout_seconds + 300

    def broker_is_redis(self) -> bool:
        return self.resolved_broker_url.startswith(("redis://", "rediss://", "unix://"))


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]


__all__ = ["EMBEDDED_REDIS_URL_FILE", "PRIORITIES", "Settings", "get_settings"]
