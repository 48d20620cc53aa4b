"""Document collections for retrieval (RAG): add documents, list them, delete them.

Adding documents is a job of kind "index" (202 and the job, as `POST /v1/jobs`): the
worker embeds them, since this process never runs a model. A chat job names a
collection in `rag` to have its most relevant documents put before its question.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.deps import CurrentCaller, CurrentKey, ServicesDep, require_json
from inferq.api.submission import submit
from inferq.db.tables import documents
from inferq.errors import CollectionNotFound, InvalidRequest
from inferq.jobs.schemas import COLLECTION
from inferq.jobs.store import NewJob
from inferq.jobs.validation import is_embedding_model

router = APIRouter(prefix="/v1/collections", tags=["collections"])
CollectionName = Annotated[str, Path(pattern=COLLECTION)]


class NewDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)


class NewDocuments(BaseModel):
    """`POST /v1/collections/{collection}/documents`."""

    model_config = ConfigDict(extra="forbid")

    documents: list[NewDocument] = Field(min_length=1, max_length=256)


class Document(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]
    created_at: datetime


class DocumentPage(BaseModel):
    collection: str
    data: list[Document]


class Deleted(BaseModel):
    collection: str
    deleted_documents: int


@router.post("/{collection}/documents", status_code=202, dependencies=[Depends(require_json)])
async def add_documents(
    collection: CollectionName, body: NewDocuments, caller: CurrentCaller, services: ServicesDep
) -> Response:
    """Queue the documents for indexing; the job's result lists their ids."""
    name = services.settings.rag_embedding_model
    if name is None or not is_embedding_model(services.registry, name):
        raise InvalidRequest(
            "retrieval is off (INFERQ_RAG_EMBEDDING_MODEL names no embedding model)"
        )
    spec = services.registry.get(name, kind="embedding")
    docs = [d.model_dump() for d in body.documents]
    new = NewJob(
        key_id=caller.key_id,
        model=spec.name,
        priority="normal",
        payload={"collection": collection, "documents": docs},
        kind="index",
    )
    job = await submit(services, new, spec.pool, caller, prompt_texts=[d["text"] for d in docs])
    return Response(
        job.model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/jobs/{job.id}"},
    )


@router.get("/{collection}/documents")
async def list_documents(
    collection: CollectionName, key_id: CurrentKey, services: ServicesDep
) -> DocumentPage:
    """The collection's documents, oldest first."""
    query = (
        sa.select(documents.c.id, documents.c.text, documents.c.meta, documents.c.created_at)
        .where(documents.c.key_id == key_id, documents.c.collection == collection)
    )
    async with services.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    if not rows:
        raise CollectionNotFound(f"no collection {collection!r}")
    data = [
        Document(id=r.id, text=r.text, metadata=r.meta, created_at=r.created_at)
        for r in sorted(rows, key=_position)
    ]
    return DocumentPage(collection=collection, data=data)


def _position(row: Any) -> tuple[Any, ...]:
    """Oldest job first, then each job's documents (and their pieces) in the order they
    were sent: ids are `<job>:<i>` or `<job>:<i>:<k>`, and as text `:10` sorts before `:2`."""
    job, *place = row.id.split(":")
    return (row.created_at, job, *(int(p) for p in place))


@router.delete("/{collection}")
async def delete_collection(
    collection: CollectionName, key_id: CurrentKey, services: ServicesDep
) -> Deleted:
    """Delete every document of the collection."""
    statement = documents.delete().where(
        documents.c.key_id == key_id, documents.c.collection == collection
    )
    async with services.engine.begin() as conn:
        deleted = int((await conn.execute(statement)).rowcount)
    if not deleted:
        raise CollectionNotFound(f"no collection {collection!r}")
    return Deleted(collection=collection, deleted_documents=deleted)
