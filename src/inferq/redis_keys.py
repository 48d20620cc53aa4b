"""Every Redis key inferq uses, in one place."""

PREFIX = "inferq:"
REAPER_LOCK = PREFIX + "reaper:lock"
# Bumped after every cancel flag is set: workers read the flags only when it moved.
CANCELS = PREFIX + "cancels"


def job_stream(job_id: str) -> str:
    """The job's event stream: deltas, resets, one terminal event."""
    return f"{PREFIX}stream:{job_id}"


def cancel_flag(job_id: str) -> str:
    """Set by the API when a running job must stop."""
    return f"{PREFIX}cancel:{job_id}"


def worker_alive(worker_id: str) -> str:
    """Present while the worker process heartbeats; expires when it dies."""
    return f"{PREFIX}worker:{worker_id}"


def breaker(endpoint: str) -> str:
    """A provider endpoint's circuit-breaker state (a hash)."""
    return f"{PREFIX}breaker:{endpoint}"


BATCH_SWEEP_LOCK = PREFIX + "batches:sweep:lock"
EXPIRY_LOCK = PREFIX + "expiry:lock"
FILE_EXPIRY_LOCK = PREFIX + "files:expiry:lock"


def batch_dispatched(batch_id: str) -> str:
    """Present for a while after a batch was handed to the workers: no second hand-off."""
    return f"{PREFIX}batch:dispatched:{batch_id}"


def response_cache(key_id: str, digest: str) -> str:
    """A cached answer: one API key's, to the request whose hash is `digest`."""
    return f"{PREFIX}cache:{{{key_id}}}:{digest}"


def semantic_index(key_id: str, digest: str) -> str:
    """One API key's cached prompts (their vectors) for one model and set of parameters."""
    return f"{PREFIX}semcache:{{{key_id}}}:{digest}"


def response_cache_patterns(key_id: str) -> list[str]:
    """SCAN patterns of every cache entry of one API key (answers and their vectors)."""
    return [response_cache(key_id, "*"), semantic_index(key_id, "*")]


def rate(key_id: str, part: str) -> str:
    """An API key's admission state (`{key_id}` keeps a key's parts in one cluster slot)."""
    return f"{PREFIX}rate:{{{key_id}}}:{part}"


def idempotency(key_id: str, idempotency_key: str) -> str:
    """The first answer to a request made with this Idempotency-Key."""
    return f"{PREFIX}idem:{{{key_id}}}:{idempotency_key}"
