"""Webhook signing secrets, a job's delivery log, and the check of a submitted URL."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from inferq.api.deps import CurrentKey, ServicesDep
from inferq.errors import InvalidRequest, JobNotFound
from inferq.jobs.schemas import WebhookTarget
from inferq.webhooks.log import DeliveryLog, delivery_log
from inferq.webhooks.secrets import SecretStore
from inferq.webhooks.ssrf import Allowlist, WebhookRefused, check_url

router = APIRouter(tags=["webhooks"])


class WebhookUrlRefused(InvalidRequest):
    slug = "webhook-url-refused"
    title = "The webhook URL is not allowed"


class SigningSecret(BaseModel):
    """Verify deliveries with it (Standard Webhooks); `whsec_` + base64 of the key bytes."""

    secret: str


@router.get("/v1/webhooks/secret")
async def get_secret(key_id: CurrentKey, services: ServicesDep) -> SigningSecret:
    """This key's webhook signing secret (made on first use)."""
    return SigningSecret(secret=await SecretStore(services.engine).get_or_create(key_id))


@router.post("/v1/webhooks/secret/rotate")
async def rotate_secret(key_id: CurrentKey, services: ServicesDep) -> SigningSecret:
    """A new secret; for a grace period deliveries carry signatures by both."""
    return SigningSecret(secret=await SecretStore(services.engine).rotate(key_id))


@router.get("/v1/jobs/{job_id}/webhook")
async def job_webhook(job_id: str, key_id: CurrentKey, services: ServicesDep) -> DeliveryLog:
    """The job's webhook deliveries, each with its attempts."""
    if await services.jobs.get(key_id, job_id) is None:
        raise JobNotFound(f"no job {job_id!r}")
    return await delivery_log(services.engine, job_id)


async def prepare_webhook(services: ServicesDep, key_id: str, target: WebhookTarget | None) -> None:
    """Refuse (422) a URL the SSRF guard refuses; make sure the key has a secret to sign.

    The worker checks the URL again before every attempt; this check is so a client
    learns of a bad URL when it submits, not hours later in the delivery log.
    """
    if target is None:
        return
    allow = Allowlist.parse(services.settings.webhook_allow_hosts)
    try:
        # Resolving the host blocks: off the event loop.
        await run_in_threadpool(check_url, target.url, allow)
    except WebhookRefused as exc:
        raise WebhookUrlRefused(
            f"webhook.url: {exc.detail}", param="webhook.url", reason=exc.reason
        ) from exc
    except OSError as exc:
        raise WebhookUrlRefused(
            f"webhook.url: the host does not resolve ({exc})",
            param="webhook.url",
            reason="unresolvable",
        ) from exc
    await SecretStore(services.engine).get_or_create(key_id)
