"""The job as clients see it: request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from inferq.errors import ProviderInvalidRequest
from inferq.providers.request import GenerationRequest


def without_nul(text: str) -> str:
    # PostgreSQL stores no NUL in text (a conversation's messages, a document): refused
    # here on both stores alike, rather than failing the job after it ran.
    if "\x00" in text:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return text


# Text a model reads and the service may keep.
Text = Annotated[str, AfterValidator(without_nul)]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Priority = Literal["high", "normal", "low"]
CacheMode = Literal["off", "exact", "semantic"]
# A client's own conversation ids (a user, a thread): letters and digits first, then
# also _ . : -, at most 64 characters.
CONVERSATION_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


# A collection's name: the client's own, as a conversation id.
COLLECTION = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class Retrieval(BaseModel):
    """`rag`: put the collection's documents most like the question before it."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(pattern=COLLECTION)
    top_k: int = Field(default=3, ge=1, le=20)
    # Cosine similarity a document needs to be used at all.
    min_score: float = Field(default=0.3, ge=-1.0, le=1.0)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: Text


class WebhookTarget(BaseModel):
    """Where the job's terminal event is POSTed, signed per Standard Webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)


class JobCreate(BaseModel):
    """`POST /v1/jobs`: a chat (`messages`) or completion (`prompt`) request."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] | None = None
    prompt: Text | None = None
    max_tokens: int = Field(default=256, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    priority: Priority = "normal"
    metadata: dict[str, str] = Field(default_factory=dict)
    webhook: WebhookTarget | None = None
    # "exact": answer from an earlier identical request of this key (same model,
    # messages or prompt and sampling parameters) if one is cached, and cache this one;
    # "semantic": or from one whose messages or prompt mean nearly the same.
    cache: CacheMode = "off"
    # Send the earlier turns of this key's conversation first; on success, this job's
    # messages and its answer become its latest turn (chat jobs only).
    conversation_id: str | None = Field(default=None, pattern=CONVERSATION_ID)
    # Retrieval-augmented generation from one of this key's document collections.
    rag: Retrieval | None = None

    @field_validator("stop")
    @classmethod
    def _stop_as_list(cls, value: str | list[str] | None) -> list[str] | None:
        if isinstance(value, str):
            value = [value]
        if value is not None and any(not s for s in value):
            raise ValueError("stop sequences must not be empty")
        return value

    @model_validator(mode="after")
    def _one_of_messages_or_prompt(self) -> JobCreate:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must not be empty")
        if self.conversation_id is not None and self.messages is None:
            raise ValueError("`conversation_id` needs `messages`: a conversation is a chat")
        return self

    def texts(self) -> list[str]:
        """The prompt text, for token estimates."""
        return [m.content for m in self.messages] if self.messages else [self.prompt or ""]

    def generation(self, stream: bool = True) -> GenerationRequest:
        return GenerationRequest(
            stream=stream,
            messages=[m.model_dump() for m in self.messages] if self.messages else None,
            prompt=self.prompt,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop if isinstance(self.stop, list) else None,
            seed=self.seed,
            cache=self.cache,
            rag=self.rag.model_dump() if self.rag else None,
        )


class Output(BaseModel):
    text: str
    finish_reason: str | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class JobError(BaseModel):
    type: str
    message: str


class Job(BaseModel):
    """A job as returned by every route."""

    id: str
    status: JobStatus
    model: str
    priority: Priority
    output: Output | None = None
    usage: Usage | None = None
    error: JobError | None = None
    # What a job of a kind other than generate produced (an embed job: its vectors).
    result: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int
    served_model: str | None = None
    # At the registry's prices for the model that served the job; None when unpriced.
    cost_usd: float | None = None
    # Answered from the response cache (`cache: "exact"`): no provider was called.
    cached: bool = False
    metadata: dict[str, str]
    # Set when the result expiry deleted the job's request and answer (output, result).
    expired_at: datetime | None = None
    # The owner, for server-side bookkeeping; never serialized.
    key_id: str | None = Field(default=None, exclude=True)
    # Lets a finish hook skip jobs without a webhook; never serialized.
    webhook_url: str | None = Field(default=None, exclude=True)
    # Lets the batch hook skip jobs of no batch without a query; never serialized.
    batch_id: str | None = Field(default=None, exclude=True)

    @property
    def refused_as_invalid(self) -> bool:
        """Failed because the provider found the request itself invalid: the client's to
        fix, so the OpenAI routes and batch lines answer 400, not 502."""
        return self.error is not None and self.error.type == ProviderInvalidRequest.kind

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """Build from a `jobs` row (a SQLAlchemy Row or mapping)."""
        m = row._mapping if hasattr(row, "_mapping") else row
        output = None
        if m["output_text"] is not None:
            output = Output(text=m["output_text"], finish_reason=m["finish_reason"])
        usage = None
        if m["prompt_tokens"] is not None:
            usage = Usage(
                prompt_tokens=m["prompt_tokens"], completion_tokens=m["completion_tokens"] or 0
            )
        error = None
        if m["error_type"] is not None:
            error = JobError(type=m["error_type"], message=m["error_message"] or "")
        return cls(
            id=m["id"],
            status=m["status"],
            model=m["model"],
            priority=m["priority"],
            output=output,
            usage=usage,
            error=error,
            result=m.get("result"),
            created_at=m["created_at"],
            started_at=m["started_at"],
            finished_at=m["finished_at"],
            attempts=m["attempts"],
            served_model=m.get("served_model"),
            cost_usd=m.get("cost_usd"),
            cached=bool(m.get("cached")),
            key_id=m.get("key_id"),
            webhook_url=m.get("webhook_url"),
            batch_id=m.get("batch_id"),
            metadata=m["metadata"] or {},
            expired_at=m.get("expired_at"),
        )


class JobPage(BaseModel):
    """`GET /v1/jobs`: newest first; pass `next_cursor` as `cursor` for the next page."""

    data: list[Job]
    next_cursor: str | None
