"""Fixtures for the provider tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferq.providers.llamacpp import default_gguf_path


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The shipped Gemma 3 270M GGUF, assembled on first use."""
    return default_gguf_path()
