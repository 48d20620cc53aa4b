"""Conversation memory: a chat job that names a conversation is sent its earlier turns.

The API reads the conversation's messages and puts them before the job's own, so the
job row holds the whole request it ran (and the response cache sees it whole). The
worker adds the job's own messages and its answer in the transaction that saves the job
as succeeded: a client who has the answer finds its turn in the conversation. A failed
or cancelled job adds nothing. Turns are kept in the order their jobs finished; two
turns sent at once both see the history as it was, and neither sees the other.

A conversation outgrows what one request may carry: the message limit, and the model's
context window when the registry gives one. The job is then sent the newest turns that
fit (`window`), not refused; the conversation itself keeps every message.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from langchain_core.messages import BaseMessage, convert_to_messages, trim_messages
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.admission import estimate_prompt_tokens
from inferq.config import Settings
from inferq.db.tables import conversation_messages as table
from inferq.jobs.schemas import JobCreate, Message
from inferq.providers.registry import ModelSpec

log = logging.getLogger(__name__)
_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


@dataclass(frozen=True)
class Turn:
    """What a succeeded job adds to its conversation."""

    key_id: str
    conversation_id: str
    messages: list[dict[str, str]]


def turn_of(payload: dict[str, Any], key_id: str | None, answer: str | None) -> Turn | None:
    """The turn a job whose answer is `answer` adds, if it named a conversation."""
    conversation = payload.get("conversation")
    if not conversation or key_id is None or answer is None:
        return None
    own = (payload.get("messages") or [])[conversation["history"] :]
    said = [{"role": m["role"], "content": m["content"]} for m in own]
    return Turn(key_id, conversation["id"], [*said, {"role": "assistant", "content": answer}])


def add_turn(conn: sa.Connection, turn: Turn, job_id: str, now: datetime) -> None:
    rows = [
        {
            "key_id": turn.key_id,
            "conversation_id": turn.conversation_id,
            "role": m["role"],
            "content": m["content"],
            "job_id": job_id,
            "created_at": now,
        }
        for m in turn.messages
    ]
    conn.execute(table.insert(), rows)


def window(
    history: list[Message], job: JobCreate, spec: ModelSpec, settings: Settings
) -> list[Message]:
    """The newest messages of `history` that fit before the job's own: within the
    message limit and, when the model's context window is known, its estimated tokens
    beside the job's `max_tokens`. The window starts at a user message, after the
    conversation's first system message when it has one that fits. A message over the
    per-message limit (a long answer) ends the window: it would refuse every later turn.
    """
    own = job.messages or []
    room = settings.max_messages - len(own)
    if not history or room <= 0:
        return []
    tokens = sys.maxsize
    if spec.context_window is not None:
        tokens = (
            spec.context_window - job.max_tokens - estimate_prompt_tokens([m.content for m in own])
        )
    limit = settings.max_message_chars

    def cost(messages: list[BaseMessage]) -> int:
        return sum(
            tokens + 1 if len(text) > limit else estimate_prompt_tokens([text])
            for text in (str(m.content) for m in messages)
        )

    kept = convert_to_messages([m.model_dump() for m in history])
    for budget, counter in ((room, len), (tokens, cost)):
        kept = trim_messages(
            kept,
            max_tokens=max(budget, 0),
            token_counter=counter,
            strategy="last",
            start_on="human",
            include_system=True,
        )
    return [Message(role=_ROLES[m.type], content=str(m.content)) for m in kept]


class ConversationStore:
    """The API's side: read a conversation, put it before a job's messages, delete it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def messages(self, key_id: str, conversation_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(table.c.role, table.c.content, table.c.job_id, table.c.created_at)
            .where(table.c.key_id == key_id, table.c.conversation_id == conversation_id)
            .order_by(table.c.id)
        )
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def list(
        self, key_id: str, before: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of the key's conversations, the one with the newest message first, and
        the position the next page starts before (None on the last page)."""
        last = sa.func.max(table.c.id)
        query = (
            sa.select(
                table.c.conversation_id.label("id"),
                sa.func.count().label("messages"),
                sa.func.min(table.c.created_at).label("created_at"),
                sa.func.max(table.c.created_at).label("updated_at"),
                last.label("last"),
            )
            .where(table.c.key_id == key_id)
            .group_by(table.c.conversation_id)
            .order_by(last.desc())
            .limit(limit + 1)
        )
        if before is not None:
            query = query.having(last < before)
        async with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(query)]
        page = rows[:limit]
        return page, page[-1]["last"] if len(rows) > limit else None

    async def delete(self, key_id: str, conversation_id: str) -> int:
        statement = table.delete().where(
            table.c.key_id == key_id, table.c.conversation_id == conversation_id
        )
        async with self.engine.begin() as conn:
            return int((await conn.execute(statement)).rowcount)

    async def with_history(
        self, key_id: str, job: JobCreate, spec: ModelSpec, settings: Settings
    ) -> tuple[JobCreate, int | None]:
        """The job with the newest of its conversation's messages that fit first, and
        how many those are (None for a job that names no conversation)."""
        if job.conversation_id is None:
            return job, None
        history = [
            Message(role=m["role"], content=m["content"])
            for m in await self.messages(key_id, job.conversation_id)
        ]
        sent = window(history, job, spec, settings)
        if len(sent) < len(history):
            log.info(
                "conversation %s: %d of %d earlier messages sent (the rest no longer fit)",
                job.conversation_id,
                len(sent),
                len(history),
            )
        merged = job.model_copy(update={"messages": [*sent, *(job.messages or [])]})
        return merged, len(sent)
