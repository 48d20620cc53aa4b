"""Retrieval-augmented generation, on the worker: index documents, and put the ones most
like a job's question before it.

An "index" job splits each document longer than `INFERQ_RAG_CHUNK_CHARS` into
overlapping pieces (LangChain's recursive splitter: paragraphs, then sentences, then
words), embeds them with `INFERQ_RAG_EMBEDDING_MODEL` (through the worker's embedding
batcher) and stores them with their vectors in the database, under the API key and
collection: document `i` of the job is row `<job>:<i>`, or rows `<job>:<i>:<k>` when
split. Run again after a crash, it replaces its own rows. A chat
or completion job with `rag` has its question (the last user message, or the prompt)
embedded the same way and compared with every vector of the collection (cosine, in
numpy: a few thousand documents per collection is what this is for; past that, a vector
index); the `top_k` best at `min_score` or more go before the question as a system
message (a prefix of the prompt), and the job's `result` names them. A job that asked for
retrieval and cannot have it (no embedding model, it fails, or the collection was
indexed with a model whose vectors are of another size) fails saying so rather than
answer without its documents.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from langchain_text_splitters import RecursiveCharacterTextSplitter

from inferq.config import Settings
from inferq.db.tables import documents
from inferq.embedding_jobs import EmbedHandler
from inferq.errors import InferqError, ProviderError
from inferq.jobs.claims import ClaimedJob, Outcome
from inferq.jobs.store import utcnow
from inferq.liveness import StopSignal
from inferq.streams import StreamWriter

log = logging.getLogger(__name__)

Handler = Callable[[ClaimedJob, StreamWriter, StopSignal], Outcome]
# (vectors, tokens spent) for texts.
Embed = Callable[[list[str]], tuple[list[list[float]], int]]
CONTEXT_HEADER = "Answer using the context below where it is relevant.\n\nContext:\n"


class NotComparable(Exception):
    """The collection's vectors are all of another size than the question's: it was
    indexed with another embedding model."""


def embedder(handler: EmbedHandler, name: str | None) -> Embed | None:
    """Texts to vectors with the embedding model `name`, through `handler`'s batcher."""
    if name is None:
        return None

    def embed(texts: list[str]) -> tuple[list[list[float]], int]:
        served = handler.vectors(name, texts)
        return served.vectors, served.prompt_tokens

    return embed


def unit(vectors: list[list[float]]) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


@dataclass(frozen=True)
class Piece:
    """What one row holds: a whole document (`id` "3") or a piece of one ("3:0")."""

    id: str
    text: str
    metadata: dict[str, Any]


def splitter(settings: Settings) -> Callable[[list[dict[str, Any]]], list[Piece]]:
    """Documents → the pieces to embed and store, in order."""
    split = RecursiveCharacterTextSplitter(
        chunk_size=settings.rag_chunk_chars,
        chunk_overlap=min(settings.rag_chunk_overlap, settings.rag_chunk_chars // 2),
    ).split_text

    def pieces(docs: list[dict[str, Any]]) -> list[Piece]:
        out: list[Piece] = []
        for i, doc in enumerate(docs):
            meta = doc.get("metadata") or {}
            parts = split(doc["text"]) if len(doc["text"]) > settings.rag_chunk_chars else []
            if len(parts) < 2:
                out.append(Piece(str(i), doc["text"], meta))
            else:
                out += [Piece(f"{i}:{k}", part, meta) for k, part in enumerate(parts)]
        return out

    return pieces


class DocumentStore:
    """A key's documents by collection (sync: the worker's threads)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def put(
        self,
        job_id: str,
        key_id: str,
        collection: str,
        docs: list[Piece],
        vectors: np.ndarray,
    ) -> list[str]:
        """Store the index job's documents (or their pieces: `Piece.id`), replacing any
        an earlier run of it stored."""
        now = utcnow()
        rows = [
            {
                "id": f"{job_id}:{doc.id}",
                "key_id": key_id,
                "collection": collection,
                "text": doc.text,
                "meta": doc.metadata,
                "embedding": vector.tobytes(),
                "job_id": job_id,
                "created_at": now,
            }
            for doc, vector in zip(docs, vectors, strict=True)
        ]
        with self.engine.begin() as conn:
            conn.execute(documents.delete().where(documents.c.job_id == job_id))
            conn.execute(documents.insert(), rows)
        return [row["id"] for row in rows]

    def nearest(
        self, key_id: str, collection: str, query: np.ndarray, top_k: int, min_score: float
    ) -> list[tuple[str, str, float]]:
        """(id, text, score) of the best `top_k` documents at `min_score` or more."""
        select = sa.select(documents.c.id, documents.c.text, documents.c.embedding).where(
            documents.c.key_id == key_id, documents.c.collection == collection
        )
        with self.engine.connect() as conn:
            found = conn.execute(select).all()
        # Vectors of another size come from another embedding model (the setting changed
        # since they were indexed): they cannot be compared, and would misalign the matrix.
        rows = [r for r in found if len(r.embedding) == query.nbytes]
        if len(rows) < len(found):
            if not rows:
                size = len(found[0].embedding) // query.itemsize
                raise NotComparable(
                    f"collection {collection!r} was indexed with an embedding model of "
                    f"{size} dimensions and INFERQ_RAG_EMBEDDING_MODEL gives {query.size}: "
                    "index its documents again"
                )
            log.warning(
                "collection %r: %d of %d documents were indexed with another embedding "
                "model and are left out",
                collection,
                len(found) - len(rows),
                len(found),
            )
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r.embedding for r in rows), dtype=np.float32)
        scores = matrix.reshape(len(rows), -1) @ query
        best = np.argsort(-scores)[:top_k]
        return [
            (rows[i].id, rows[i].text, float(scores[i])) for i in best if scores[i] >= min_score
        ]


class IndexHandler:
    """Jobs of kind "index" (payload {"collection", "documents": [{"text", "metadata"}]})."""

    def __init__(
        self,
        store: DocumentStore,
        embed: Embed | None,
        split: Callable[[list[dict[str, Any]]], list[Piece]],
    ) -> None:
        self.store = store
        self.embed = embed
        self.split = split

    def __call__(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome:
        if self.embed is None or claimed.key_id is None:
            return _unavailable("documents cannot be indexed")
        docs = self.split(claimed.payload["documents"])
        try:
            vectors, tokens = self.embed([doc.text for doc in docs])
        except (ProviderError, InferqError) as exc:
            return Outcome("failed", error_type="retrieval_unavailable", error_message=str(exc))
        collection = claimed.payload["collection"]
        ids = self.store.put(claimed.id, claimed.key_id, collection, docs, unit(vectors))
        result = {"collection": collection, "documents": ids}
        return Outcome("succeeded", prompt_tokens=tokens, completion_tokens=0, result=result)


class RetrievingHandler:
    """Puts a `rag` job's documents before its question, then asks `inner`."""

    def __init__(self, inner: Handler, store: DocumentStore, embed: Embed | None) -> None:
        self.inner = inner
        self.store = store
        self.embed = embed

    def __call__(self, claimed: ClaimedJob, writer: StreamWriter, stop: StopSignal) -> Outcome:
        rag = claimed.payload.get("rag")
        if not rag:
            return self.inner(claimed, writer, stop)
        if self.embed is None or claimed.key_id is None:
            return _unavailable("retrieval is off")
        try:
            vectors, _ = self.embed([question(claimed.payload)])
        except (ProviderError, InferqError) as exc:
            return Outcome("failed", error_type="retrieval_unavailable", error_message=str(exc))
        try:
            found = self.store.nearest(
                claimed.key_id, rag["collection"], unit(vectors)[0], rag["top_k"], rag["min_score"]
            )
        except NotComparable as exc:
            return Outcome("failed", error_type="retrieval_unavailable", error_message=str(exc))
        payload = with_context(claimed.payload, [text for _, text, _ in found])
        outcome = self.inner(replace(claimed, payload=payload), writer, stop)
        retrieved = [{"id": doc_id, "score": round(score, 4)} for doc_id, _, score in found]
        return replace(outcome, result={**(outcome.result or {}), "retrieved": retrieved})


def question(payload: dict[str, Any]) -> str:
    """What retrieval searches with: the last user message, or the prompt."""
    users = [m["content"] for m in payload.get("messages") or [] if m["role"] == "user"]
    return users[-1] if users else payload.get("prompt") or ""


def with_context(payload: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """The payload with `texts` before its messages (a system message) or its prompt."""
    if not texts:
        return payload
    context = CONTEXT_HEADER + "\n".join(f"[{i}] {t}" for i, t in enumerate(texts, 1))
    if payload.get("messages") is not None:
        messages = [{"role": "system", "content": context}, *payload["messages"]]
        return {**payload, "messages": messages}
    return {**payload, "prompt": f"{context}\n\n{payload.get('prompt') or ''}"}


def _unavailable(what: str) -> Outcome:
    message = f"{what}: INFERQ_RAG_EMBEDDING_MODEL names no embedding model"
    return Outcome("failed", error_type="retrieval_unavailable", error_message=message)
