"""inferq's errors, and their mapping to RFC 9457 problem details.

    InferqError
    ├── InvalidRequest          422  the body is well-formed but not acceptable
    │   ├── UnknownModel        422
    │   └── MalformedBody       400  not JSON, or not an object
    ├── PayloadTooLarge         413
    ├── UnsupportedMediaType    415
    ├── Unauthorized            401
    ├── Forbidden               403
    ├── NotFound                404
    │   └── JobNotFound         404
    ├── Conflict                409
    ├── RateLimited             429  a per-key limit (Retry-After, RateLimit-* headers)
    ├── JobFailed               502  a synchronous route's job failed
    │   └── JobInvalid          400  ... because the provider found the request invalid
    ├── JobPending              504  a synchronous route stopped waiting (the job goes on)
    ├── ServiceUnavailable      503
    │   ├── QueueUnavailable    503  the broker cannot take the job
    │   ├── Overloaded          503  the backlog is at its bound (Retry-After)
    │   └── StoreUnavailable    503  the database or Redis is unreachable
    └── ProviderError                a provider call failed (recorded on the job)
        ├── ProviderTimeout          retryable
        ├── ProviderRateLimited      retryable, may carry retry_after
        ├── ProviderUnavailable      retryable: connection errors, 5xx
        └── ProviderRejected         not retryable: the provider refused the request (4xx)
            └── ProviderInvalidRequest   the request itself: 400/413/422, too long a prompt

Routes raise these; `problem_response` turns any of them into `application/problem+json`.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://inferq.dev/problems/"


class InferqError(Exception):
    """Base of every error inferq raises on purpose."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self, detail: str = "", headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 body for this error."""
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class InvalidRequest(InferqError):
    status = 422
    slug = "invalid-request"
    title = "The request is not valid"


class UnknownModel(InvalidRequest):
    slug = "unknown-model"
    title = "Unknown model"


class MalformedBody(InvalidRequest):
    status = 400
    slug = "malformed-body"
    title = "The body is not a JSON object"


class PayloadTooLarge(InferqError):
    status = 413
    slug = "payload-too-large"
    title = "The body is too large"


class UnsupportedMediaType(InferqError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class Unauthorized(InferqError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"


class Forbidden(InferqError):
    status = 403
    slug = "forbidden"
    title = "Not allowed for this key"


class NotFound(InferqError):
    status = 404
    slug = "not-found"
    title = "Not found"


class JobNotFound(NotFound):
    slug = "job-not-found"
    title = "Job not found"


class ConversationNotFound(NotFound):
    slug = "conversation-not-found"
    title = "Conversation not found"


class CollectionNotFound(NotFound):
    slug = "collection-not-found"
    title = "Collection not found"


class MethodNotAllowed(InferqError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(InferqError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class JobPending(InferqError):
    """A synchronous route stopped waiting; the job goes on and can be polled."""

    status = 504
    slug = "job-pending"
    title = "The job has not finished yet"


class JobFailed(InferqError):
    """A synchronous route's job failed at the provider."""

    status = 502
    slug = "job-failed"
    title = "The job failed"


class JobInvalid(JobFailed):
    """A synchronous route's job was refused by the provider as invalid (a prompt longer
    than the model's context, a parameter it does not take): the client's to fix, so a
    400 as the provider's own API would answer, not a gateway failure."""

    status = 400
    slug = "job-invalid"
    title = "The model provider found the request invalid"


class RateLimited(InferqError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests for this key"


class ServiceUnavailable(InferqError):
    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"


class QueueUnavailable(ServiceUnavailable):
    slug = "queue-unavailable"
    title = "The job queue is unavailable"


class Overloaded(ServiceUnavailable):
    slug = "overloaded"
    title = "The queue is full"


class StoreUnavailable(ServiceUnavailable):
    slug = "store-unavailable"
    title = "The job store is unavailable"


class ProviderError(InferqError):
    """A provider call failed; `retryable` says whether trying again may help."""

    status = 502
    slug = "provider-error"
    title = "The model provider failed"
    retryable: ClassVar[bool] = False
    kind: ClassVar[str] = "provider_error"


class ProviderTimeout(ProviderError):
    slug = "provider-timeout"
    title = "The model provider timed out"
    retryable = True
    kind = "timeout"


class ProviderRateLimited(ProviderError):
    slug = "provider-rate-limited"
    title = "The model provider is rate limiting"
    retryable = True
    kind = "rate_limited"

    def __init__(self, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    slug = "provider-unavailable"
    title = "The model provider is unavailable"
    retryable = True
    kind = "unavailable"


class ProviderRejected(ProviderError):
    slug = "provider-rejected"
    title = "The model provider rejected the request"
    kind = "rejected"


class ProviderInvalidRequest(ProviderRejected):
    """The provider refused the request itself (400, 413, 422; a prompt past the context
    window), as opposed to refusing us (401, 403: its credentials; 404: no such model),
    which is the service's to fix."""

    slug = "provider-invalid-request"
    title = "The model provider found the request invalid"
    kind = "invalid_request"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """What a client is told of an unexpected error: its first line, not the SQL and
    parameters SQLAlchemy appends (the full error is in the worker's log)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
