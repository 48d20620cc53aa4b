"""The relational schema: API keys, jobs, files, batches and webhooks (SQLAlchemy Core)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    # SHA-256 of the key: keys are 256-bit random, so a slow hash adds nothing.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    # Admin keys may read service-wide state (breakers); limits are per key, None = the
    # service default.
    sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("rpm_limit", sa.Integer(), nullable=True),
    sa.Column("tpm_limit", sa.Integer(), nullable=True),
    sa.Column("max_active_jobs", sa.Integer(), nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    # generate (chat or completion) | embed: picks the worker's handler.
    sa.Column("kind", sa.String(16), nullable=False, server_default="generate"),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("priority", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("request", sa.JSON(), nullable=False),
    sa.Column("metadata", sa.JSON(), nullable=False),
    sa.Column("output_text", sa.Text(), nullable=True),
    sa.Column("finish_reason", sa.String(32), nullable=True),
    sa.Column("prompt_tokens", sa.Integer(), nullable=True),
    sa.Column("completion_tokens", sa.Integer(), nullable=True),
    sa.Column("error_type", sa.String(64), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    # Kind-specific result beyond text (e.g. embedding vectors).
    sa.Column("result", sa.JSON(), nullable=True),
    sa.Column("batch_id", sa.String(64), nullable=True),
    sa.Column("custom_id", sa.String(512), nullable=True),
    # The request's position in its batch's input file: the order of the result files.
    sa.Column("batch_index", sa.Integer(), nullable=True),
    # Provider attempts, retries and fallbacks included.
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    # Deliveries to a worker; the reaper ends a job that keeps killing its workers.
    sa.Column("claims", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("served_model", sa.String(200), nullable=True),
    # What the job cost at the registry's prices for the model that served it.
    sa.Column("cost_usd", sa.Float(), nullable=True),
    # Answered from the response cache (NULL: no, as for jobs from before the column).
    sa.Column("cached", sa.Boolean(), nullable=True),
    sa.Column("worker_id", sa.String(128), nullable=True),
    # The submitting request's X-Request-ID: every delivery's log lines carry it, those
    # of a job the reaper requeued after its worker died included.
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    # Where the job's terminal event is POSTed (see webhook_deliveries).
    sa.Column("webhook_url", sa.String(2048), nullable=True),
    # When the result expiry deleted the job's request and answer (the row stays).
    sa.Column("expired_at", UTCDateTime(), nullable=True),
    sa.Index("ix_jobs_key_created", "key_id", "created_at", "id"),
    sa.Index("ix_jobs_status", "status"),
    sa.Index("ix_jobs_batch", "batch_id", "status"),
    # Usage per key over time, and recent throughput.
    sa.Index("ix_jobs_key_finished", "key_id", "finished_at"),
    sa.Index("ix_jobs_finished", "finished_at"),
    # The result expiry's scan: jobs not yet expired, oldest finished first (NULLs are
    # indexed, so the rows it already expired are not walked again).
    sa.Index("ix_jobs_unexpired", "expired_at", "finished_at"),
)

# Uploaded files and the result files of batches; the bytes live in the row, so a file is
# as durable as the jobs that read or produced it.
files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("bytes", sa.BigInteger(), nullable=False),
    sa.Column("content", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # When the file is deleted (null: kept until the client deletes it).
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Index("ix_files_key_created", "key_id", "created_at", "id"),
    sa.Index("ix_files_expires", "expires_at"),
)

# OpenAI batches: one job per input line (jobs.batch_id); the counts are the jobs'.
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("input_file_id", sa.String(64), nullable=False),
    sa.Column("completion_window", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("metadata", sa.JSON(), nullable=True),
    sa.Column("output_file_id", sa.String(64), nullable=True),
    sa.Column("error_file_id", sa.String(64), nullable=True),
    sa.Column("errors", sa.JSON(), nullable=True),
    sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
    # The worker doing the batch's current step (fan-out or writing the results); the
    # sweep hands the step to another worker when this one's alive key expires.
    sa.Column("worker_id", sa.String(128), nullable=True),
    # What a finalizing batch becomes once its files are written: completed or expired.
    sa.Column("outcome", sa.String(16), nullable=True),
    # How long its result files are kept (`output_expires_after`); null: the retention.
    sa.Column("output_expires_seconds", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("in_progress_at", UTCDateTime(), nullable=True),
    sa.Column("finalizing_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("failed_at", UTCDateTime(), nullable=True),
    sa.Column("expired_at", UTCDateTime(), nullable=True),
    sa.Column("cancelling_at", UTCDateTime(), nullable=True),
    sa.Column("cancelled_at", UTCDateTime(), nullable=True),
    sa.Index("ix_batches_key_created", "key_id", "created_at", "id"),
    sa.Index("ix_batches_status", "status"),
)

# Webhook signing secrets, one per API key. Kept in clear: they sign, so they cannot be
# hashed. The previous secret still signs for a grace period after a rotation.
webhook_secrets = sa.Table(
    "webhook_secrets",
    metadata,
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), primary_key=True),
    sa.Column("secret", sa.String(64), nullable=False),
    sa.Column("previous_secret", sa.String(64), nullable=True),
    sa.Column("rotated_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# One row per job event to deliver, written with the job (status `waiting` until the job
# ends), so the retry schedule survives restarts. `id` is the `webhook-id` header.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    # waiting (job not ended) | pending | delivered | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    # Set by the worker sending an attempt; next_attempt_at is then its lease.
    sa.Column("claim_token", sa.String(32), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_job", "job_id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column(
        "delivery_id", sa.String(40), sa.ForeignKey("webhook_deliveries.id"), primary_key=True
    ),
    sa.Column("attempt", sa.Integer(), primary_key=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
)

# Conversation memory: the turns of a key's conversation, in the order their jobs
# finished. A job that names the conversation is sent its messages first; its own
# messages and its answer are added in the transaction that saves it.
conversation_messages = sa.Table(
    "conversation_messages",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("conversation_id", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_conversation_messages_key_conversation", "key_id", "conversation_id", "id"),
)

# Retrieval (RAG): a key's documents by collection, each with its vector (float32 bytes
# of the embedding model's output, unit length). Written by "index" jobs; read by chat
# jobs that name the collection.
documents = sa.Table(
    "documents",
    metadata,
    # "<index job id>:<position>": a job run again replaces its own documents.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("meta", sa.JSON(), nullable=False),
    sa.Column("embedding", sa.LargeBinary(), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_documents_key_collection", "key_id", "collection"),
    sa.Index("ix_documents_job", "job_id"),
)
