"""The delivery row a job with a webhook is inserted with (imports only the tables).

Written in the job's own transaction, in status `waiting`: whichever way the job then
ends (a worker, the reaper, a cancel in the API, a refused enqueue), the sweep finds the
row and sends the event, so no path can end a job and forget its webhook.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

WAITING = "waiting"


def new_delivery_id() -> str:
    """Also the `webhook-id` header: stable across the retries of one event."""
    return "msg_" + uuid.uuid4().hex


def waiting_delivery(job_id: str, key_id: str, url: str, now: datetime) -> dict[str, Any]:
    return {
        "id": new_delivery_id(),
        "job_id": job_id,
        "key_id": key_id,
        "url": url,
        "status": WAITING,
        "attempts": 0,
        "created_at": now,
    }
