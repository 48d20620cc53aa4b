"""Read and delete a conversation's memory (its turns are added by the jobs that name it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from inferq.api.deps import CurrentKey, ServicesDep
from inferq.errors import ConversationNotFound, InvalidRequest
from inferq.jobs.schemas import CONVERSATION_ID

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
MAX_MESSAGE_ID = 2**31 - 1
ConversationId = Annotated[str, Path(pattern=CONVERSATION_ID)]


class Turn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str
    job_id: str
    created_at: datetime


class Conversation(BaseModel):
    """A key's conversation: its messages in the order their jobs finished."""

    id: str
    messages: list[Turn]


class ConversationSummary(BaseModel):
    id: str
    messages: int
    created_at: datetime
    # When its newest message was added.
    updated_at: datetime


class ConversationPage(BaseModel):
    """`GET /v1/conversations`: the most recently active first; pass `next_cursor` as
    `cursor` for the next page."""

    data: list[ConversationSummary]
    next_cursor: str | None


class Deleted(BaseModel):
    id: str
    deleted_messages: int


@router.get("")
async def list_conversations(
    key_id: CurrentKey,
    services: ServicesDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ConversationPage:
    """The key's conversations, the one with the newest message first."""
    if cursor is not None and not _message_id(cursor):
        raise InvalidRequest("`cursor` is not a cursor this service issued")
    before = int(cursor) if cursor is not None else None
    rows, after = await services.conversations.list(key_id, before, limit)
    return ConversationPage(
        data=[ConversationSummary(**row) for row in rows],
        next_cursor=None if after is None else str(after),
    )


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: ConversationId, key_id: CurrentKey, services: ServicesDep
) -> Conversation:
    """The conversation's messages, oldest first."""
    messages = await services.conversations.messages(key_id, conversation_id)
    if not messages:
        raise ConversationNotFound(f"no conversation {conversation_id!r}")
    return Conversation(id=conversation_id, messages=[Turn(**m) for m in messages])


@router.delete("/{conversation_id}")
async def delete_conversation(
    conversation_id: ConversationId, key_id: CurrentKey, services: ServicesDep
) -> Deleted:
    """Forget the conversation: the next job that names it starts afresh."""
    deleted = await services.conversations.delete(key_id, conversation_id)
    if not deleted:
        raise ConversationNotFound(f"no conversation {conversation_id!r}")
    return Deleted(id=conversation_id, deleted_messages=deleted)


def _message_id(cursor: str) -> bool:
    """Could it be a message id? An `Integer` column, 32 bits on PostgreSQL (a larger
    number failed the query there); ASCII digits only (`int` refuses some others)."""
    digits = cursor.isascii() and cursor.isdigit() and len(cursor) <= len(str(MAX_MESSAGE_ID))
    return digits and int(cursor) <= MAX_MESSAGE_ID
