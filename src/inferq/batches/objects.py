"""Batches as OpenAI's `batch` objects."""

from __future__ import annotations

from typing import Any

from inferq.oai.paging import unix

STAGES = (
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)


def request_counts(status: str, total: int, by_status: dict[str, int]) -> dict[str, int]:
    """`completed` are the lines of the output file, `failed` those of the error file.

    A cancelled request counts as failed (it is in the error file) unless the whole batch
    was cancelled: OpenAI leaves those out of both files.
    """
    failed = by_status.get("failed", 0)
    if status not in ("cancelling", "cancelled"):
        failed += by_status.get("cancelled", 0)
    return {"total": total, "completed": by_status.get("succeeded", 0), "failed": failed}


def batch_object(row: Any, by_status: dict[str, int]) -> dict[str, Any]:
    m = row._mapping if hasattr(row, "_mapping") else row
    body: dict[str, Any] = {
        "id": m["id"],
        "object": "batch",
        "endpoint": m["endpoint"],
        "errors": m["errors"],
        "input_file_id": m["input_file_id"],
        "completion_window": m["completion_window"],
        "status": m["status"],
        "output_file_id": m["output_file_id"],
        "error_file_id": m["error_file_id"],
        "created_at": unix(m["created_at"]),
        "expires_at": unix(m["expires_at"]),
    }
    for stage in STAGES:
        body[f"{stage}_at"] = unix(m[f"{stage}_at"])
    body["request_counts"] = request_counts(m["status"], m["total"], by_status)
    body["metadata"] = m["metadata"]
    return body
