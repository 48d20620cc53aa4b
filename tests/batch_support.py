"""Helpers for the file and batch tests: request lines, waiting on a batch, its results."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import openai
from openai.types import Batch

from inferq.db.engine import create_async
from inferq.keys import KeyStore, new_key
from tests.conftest import Service

FINAL = ("completed", "failed", "expired", "cancelled")


def sdk_for(service: Service, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{service.url}/v1", api_key=key or service.key, max_retries=0, timeout=30
    )


def fresh_key(service: Service) -> str:
    """A new API key with nothing of its own yet, stored as `inferq keys create` does."""

    async def make() -> str:
        engine = create_async(service.database_url)
        try:
            key = new_key()
            await KeyStore(engine).ensure(key, "batch-tests")
            return key
        finally:
            await engine.dispose()

    return asyncio.run(make())


def chat_line(
    custom_id: str, model: str = "sim", text: str = "hello", **body: Any
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def completion_line(custom_id: str, model: str = "sim", prompt: str = "hello") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": model, "prompt": prompt, "max_tokens": 8},
    }


def jsonl(lines: list[Any]) -> bytes:
    return "".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines
    ).encode()


def start_batch(
    sdk: openai.OpenAI, lines: list[Any], endpoint: str = "/v1/chat/completions", **extra: Any
) -> Batch:
    upload = sdk.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    return sdk.batches.create(
        input_file_id=upload.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        **extra,
    )


def wait_batch(
    sdk: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = FINAL, timeout: float = 60
) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch still {batch.status}: {batch}")
        time.sleep(0.2)


def result_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The JSON lines of a result file (none when the batch has no such file)."""
    if file_id is None:
        return []
    text = sdk.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line]


def by_custom_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Result lines keyed by custom_id; fails if any custom_id appears twice."""
    keyed = {line["custom_id"]: line for line in lines}
    assert len(keyed) == len(lines), "a custom_id appears more than once"
    return keyed
