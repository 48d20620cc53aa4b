"""What a job asks a model for, apart from any SDK (the job schemas import it, and with
it every CLI command: LangChain is not needed to read a job)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GenerationRequest:
    """What a job asks a model for: either chat `messages` or a raw `prompt`."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    # Whether anyone reads the text as it is generated. A whole answer (a non-stream
    # chat completion) lets the provider make one non-streaming call: one response to
    # parse instead of a chunk per token.
    stream: bool = True
    # "exact": answered from an earlier identical request's answer when there is one
    # (the worker's response cache), and kept for later ones; "semantic": or from a
    # request that means nearly the same; "off": neither.
    cache: str = "off"
    # {"id": the conversation, "history": how many of `messages` came from it}: the
    # worker adds the rest and the answer to it when the job succeeds.
    conversation: dict[str, Any] | None = None
    # {"collection", "top_k", "min_score"}: the worker puts the collection's documents
    # most like the question before the messages (or the prompt).
    rag: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        """The fields as the job row's `request` column holds them. A shallow copy, not
        `dataclasses.asdict`, whose deep copy of the messages took 13 µs of the API's
        ~700 per submitted job (0.3 µs this way); the lists are this request's own."""
        return dict(vars(self))
