"""Webhooks in a worker process: the finish hook and the delivery sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferq.webhooks.sender import WebhookSender

if TYPE_CHECKING:
    from inferq.worker import FinishHook, WorkerContext


def install(ctx: WorkerContext, finish_hooks: list[FinishHook]) -> WebhookSender:
    """Register the finish hook on this worker; returns its (unstarted) sender."""
    sender = WebhookSender(ctx.engine, ctx.settings)
    finish_hooks.append(sender.on_job_finished)
    return sender
