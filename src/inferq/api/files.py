"""OpenAI's Files API: upload, read, list and delete files (batch inputs and results).

A file expires when its `expires_after` says (an upload's form fields
`expires_after[anchor]=created_at` and `expires_after[seconds]`, as the OpenAI SDK sends
them). A `batch` file without one expires after the result retention, as the answers
made from it do; other files are kept until deleted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from inferq.api.deps import CurrentKey, ServicesDep
from inferq.batches.lines import LineParser, describe
from inferq.errors import InvalidRequest, NotFound, PayloadTooLarge
from inferq.files.store import ExpiresAfter, FileStore

router = APIRouter(prefix="/v1/files", tags=["files"])
# What a client may upload; `batch_output` files are made by batches only.
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


async def _files(services: ServicesDep) -> FileStore:
    return FileStore(services.engine)


Files = Annotated[FileStore, Depends(_files)]


@router.post("")
async def create_file(
    key_id: CurrentKey,
    services: ServicesDep,
    store: Files,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
    anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    seconds: Annotated[str | None, Form(alias="expires_after[seconds]")] = None,
) -> dict[str, Any]:
    """Store a file; a `batch` file is refused unless every line is a valid request."""
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}")
    expires_after = _expires_after(anchor, seconds)
    if expires_after is None and purpose == "batch":
        expires_after = services.settings.result_retention_seconds
    limit = services.settings.max_file_bytes
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(f"the file exceeds {limit} bytes")
    if purpose == "batch":
        # Parsing a large file takes a while: off the event loop.
        parser = LineParser(services.registry, services.settings)
        parsed = await run_in_threadpool(parser.parse, content)
        if parsed.errors:
            raise InvalidRequest(describe(parsed.errors))
    filename = file.filename or "upload.jsonl"
    return await store.create(key_id, purpose, filename, content, expires_after)


def _expires_after(anchor: str | None, seconds: str | None) -> int | None:
    """The seconds of the upload's expiration policy, if it gave one."""
    if anchor is None and seconds is None:
        return None
    try:
        return ExpiresAfter.model_validate({"anchor": anchor, "seconds": seconds}).seconds
    except ValidationError as exc:
        reasons = "; ".join(
            f"expires_after[{error['loc'][0]}] ({error['msg']})" for error in exc.errors()
        )
        raise InvalidRequest(f"invalid expires_after: {reasons}") from exc


@router.get("")
async def list_files(
    key_id: CurrentKey,
    store: Files,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The caller's files, newest first unless `order=asc`."""
    return await store.list(key_id, purpose, after, limit, descending=order == "desc")


@router.get("/{file_id}")
async def get_file(file_id: str, key_id: CurrentKey, store: Files) -> dict[str, Any]:
    found = await store.get(key_id, file_id)
    if found is None:
        raise NotFound(f"no file {file_id!r}")
    return found


@router.get("/{file_id}/content")
async def file_content(file_id: str, key_id: CurrentKey, store: Files) -> Response:
    """The file's bytes as they were uploaded (or written by a batch)."""
    content = await store.content(key_id, file_id)
    if content is None:
        raise NotFound(f"no file {file_id!r}")
    return Response(content, media_type="application/octet-stream")


@router.delete("/{file_id}")
async def delete_file(file_id: str, key_id: CurrentKey, store: Files) -> dict[str, Any]:
    if not await store.delete(key_id, file_id):
        raise NotFound(f"no file {file_id!r}")
    return {"id": file_id, "object": "file", "deleted": True}
