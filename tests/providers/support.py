"""Helpers shared by the provider tests."""

from __future__ import annotations

import socket
import threading

from inferq.providers.base import ChatModelProvider, Delta, Finish
from inferq.providers.request import GenerationRequest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def collect(
    provider: ChatModelProvider,
    request: GenerationRequest,
    cancel: threading.Event | None = None,
) -> tuple[list[str], Finish]:
    """The deltas' texts and the finish event of one streamed generation."""
    deltas: list[str] = []
    finishes: list[Finish] = []
    for event in provider.stream(request, cancel):
        if isinstance(event, Delta):
            assert not finishes, "a delta came after the finish"
            deltas.append(event.text)
        else:
            finishes.append(event)
    assert len(finishes) == 1, "exactly one finish event"
    return deltas, finishes[0]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
