"""inferq: an asynchronous LLM inference service."""

__version__ = "0.1.0"
