"""Document collections for retrieval (RAG): add documents, list them, delete them.

Adding documents is a job of kind "index" (202 and the job, as `POST /v1/jobs`): the
worker embeds them, since this process never runs a model. A chat job names a
collection in `rag` to have its most relevant documents put before its question.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.deps import CurrentCaller, CurrentKey, ServicesDep, require_json
from inferq.api.openapi import CREATES, errors
from inferq.api.submission import submit
from inferq.db.tables import documents
from inferq.errors import CollectionNotFound, InvalidRequest
from inferq.jobs.schemas import COLLECTION, Text
from inferq.jobs.store import NewJob
from inferq.jobs.validation import is_embedding_model

router = APIRouter(prefix="/v1/collections", tags=["collections"])
CollectionName = Annotated[str, Path(pattern=COLLECTION)]


class NewDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1, max_length=100_000)
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
    """Oldest first; pass `next_cursor` as `cursor` for the next page."""

    collection: str
    data: list[Document]
    next_cursor: str | None


class CollectionSummary(BaseModel):
    name: str
    # Rows: a document indexed in pieces counts each piece.
    documents: int
    created_at: datetime
    # When its newest document was indexed.
    updated_at: datetime


class CollectionPage(BaseModel):
    """`GET /v1/collections`: by name; pass `next_cursor` as `cursor` for the next page."""

    data: list[CollectionSummary]
    next_cursor: str | None


class Deleted(BaseModel):
    collection: str
    deleted_documents: int


@router.post(
    "/{collection}/documents",
    status_code=202,
    dependencies=[Depends(require_json)],
    responses=errors(415, 429),
    openapi_extra=CREATES,
)
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


@router.get("")
async def list_collections(
    key_id: CurrentKey,
    services: ServicesDep,
    cursor: Annotated[str | None, Query(pattern=COLLECTION)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> CollectionPage:
    """The key's collections, by name."""
    query = (
        sa.select(
            documents.c.collection.label("name"),
            sa.func.count().label("documents"),
            sa.func.min(documents.c.created_at).label("created_at"),
            sa.func.max(documents.c.created_at).label("updated_at"),
        )
        .where(documents.c.key_id == key_id)
        .group_by(documents.c.collection)
        .order_by(documents.c.collection)
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(documents.c.collection > cursor)
    async with services.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    page = [CollectionSummary(**row._mapping) for row in rows[:limit]]
    return CollectionPage(data=page, next_cursor=page[-1].name if len(rows) > limit else None)


@router.get("/{collection}/documents")
async def list_documents(
    collection: CollectionName,
    key_id: CurrentKey,
    services: ServicesDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DocumentPage:
    """The collection's documents, oldest first."""
    mine = (documents.c.key_id == key_id, documents.c.collection == collection)
    async with services.engine.connect() as conn:
        # The order is computed here (see `_position`): ids and times first, texts
        # only for the page.
        places = (
            await conn.execute(sa.select(documents.c.id, documents.c.created_at).where(*mine))
        ).all()
        if not places:
            raise CollectionNotFound(f"no collection {collection!r}")
        ordered = [row.id for row in sorted(places, key=_position)]
        start = _after(ordered, cursor)
        ids = ordered[start : start + limit]
        query = sa.select(
            documents.c.id, documents.c.text, documents.c.meta, documents.c.created_at
        ).where(*mine, documents.c.id.in_(ids))
        rows = {row.id: row for row in await conn.execute(query)}
    data = [
        Document(id=r.id, text=r.text, metadata=r.meta, created_at=r.created_at)
        for r in (rows[i] for i in ids if i in rows)
    ]
    more = start + limit < len(ordered)
    return DocumentPage(collection=collection, data=data, next_cursor=ids[-1] if more else None)


def _after(ordered: list[str], cursor: str | None) -> int:
    """Where the page after the document `cursor` starts."""
    if cursor is None:
        return 0
    try:
        return ordered.index(cursor) + 1
    except ValueError:
        raise InvalidRequest(
            "`cursor` names no document of this collection (was it indexed again?)"
        ) from None


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
