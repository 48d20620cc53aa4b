"""The provider contract's shared behaviour."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from inferq.errors import ProviderRejected
from inferq.providers.base import retry_after_seconds
from inferq.providers.llamacpp import LlamaCppProvider
from inferq.providers.request import GenerationRequest
from inferq.providers.sim import SimProvider
from tests.providers.support import collect


def test_cancel_set_before_the_start_finishes_without_calling_the_model(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    provider = SimProvider(name="sim", params={"latency_ms": 0, "record_path": str(record)})
    cancel = threading.Event()
    cancel.set()
    deltas, finish = collect(provider, GenerationRequest(prompt="never"), cancel)
    assert (deltas, finish.finish_reason) == ([], "cancelled")
    assert not record.exists()


def test_a_model_that_cannot_be_built_fails_as_a_provider_error(tmp_path: Path) -> None:
    provider = LlamaCppProvider(name="gone", params={"model_path": str(tmp_path / "no.gguf")})
    with pytest.raises(ProviderRejected):
        collect(provider, GenerationRequest(prompt="hello"))


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_seconds(
    headers: dict[str, str] | None, seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_as_an_http_date_is_the_time_left() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after_seconds({"retry-after": format_datetime(when, usegmt=True)})
    assert seconds is not None and 25 <= seconds <= 30
