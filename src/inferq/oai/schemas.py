"""OpenAI request bodies (chat and text completions) and their translation into jobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from inferq.config import Settings
from inferq.errors import InvalidRequest
from inferq.jobs.schemas import (
    CONVERSATION_ID,
    CacheMode,
    JobCreate,
    Message,
    Priority,
    Retrieval,
    Text,
    without_nul,
)
from inferq.jobs.validation import check_limits
from inferq.providers.registry import ModelSpec


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    """A message as OpenAI accepts it: `developer` is a system message, content may be parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _content_without_nul(cls, content: str | list[TextPart]) -> str | list[TextPart]:
        # After the union, so the error names the field, not one of the union's members.
        return without_nul(content) if isinstance(content, str) else content

    def plain(self) -> Message:
        text = (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )
        role = "system" if self.role == "developer" else self.role
        return Message(role=role, content=text)


class _Common(BaseModel):
    """Parameters shared by chat and text completions.

    Sampling penalties are accepted and ignored (no local provider implements them the
    same way); anything else unknown is refused, as OpenAI does.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    metadata: dict[str, str] | None = None
    # inferq's own: the queue priority of the job behind this request, and whether it
    # may be answered from (and kept in) the response cache.
    priority: Priority = "high"
    cache: CacheMode = "off"
    rag: Retrieval | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Common:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream=true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _job(self, **fields: Any) -> JobCreate:
        # A value this schema let through that a job refuses (an empty stop sequence)
        # is the client's error, named like the body's own: raised as is, it was a 500.
        try:
            return JobCreate(
                model=self.model,
                max_tokens=self.max_tokens or 256,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=self.stop,
                seed=self.seed,
                priority=self.priority,
                cache=self.cache,
                rag=self.rag,
                metadata=self.metadata or {},
                **fields,
            )
        except ValidationError as exc:
            errors = [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors()
            ]
            why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(why, errors=errors) from exc


class ChatCompletionRequest(_Common):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # inferq's own: the conversation whose earlier turns go before `messages`.
    conversation_id: str | None = Field(default=None, pattern=CONVERSATION_ID)

    def to_job(self) -> JobCreate:
        job = self._job(
            messages=[m.plain() for m in self.messages], conversation_id=self.conversation_id
        )
        if self.max_completion_tokens is not None:
            job.max_tokens = self.max_completion_tokens
        return job


class CompletionRequest(_Common):
    """`POST /v1/completions` (a single prompt string)."""

    prompt: Text
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def to_job(self) -> JobCreate:
        return self._job(prompt=self.prompt)


def checked_job(job: JobCreate, spec: ModelSpec, settings: Settings) -> JobCreate:
    """Apply the same limits as `POST /v1/jobs`."""
    if getattr(spec, "kind", "chat") != "chat":
        raise InvalidRequest(f"model {spec.name!r} is not a chat or completion model")
    check_limits(job, settings, spec.max_tokens)
    return job
