"""Read and delete a conversation's memory (its turns are added by the jobs that name it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel

from inferq.api.deps import CurrentKey, ServicesDep
from inferq.errors import ConversationNotFound
from inferq.jobs.schemas import CONVERSATION_ID

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
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


class Deleted(BaseModel):
    id: str
    deleted_messages: int


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
