"""Helpers shared by the embedding tests."""

from __future__ import annotations

from functools import cache

from inferq.providers.embeddings import SentenceTransformersProvider


@cache
def minilm() -> SentenceTransformersProvider:
    """all-MiniLM-L6-v2 computed in the test process, loaded once for every test file."""
    return SentenceTransformersProvider(name="all-minilm-l6-v2")


def assert_close(got: list[float], expected: list[float], tolerance: float = 1e-5) -> None:
    assert len(got) == len(expected)
    assert max(abs(x - y) for x, y in zip(got, expected, strict=True)) < tolerance
