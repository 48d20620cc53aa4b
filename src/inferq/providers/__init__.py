"""Providers: LangChain chat models behind one streaming interface, and the registry."""

from inferq.providers.anthropic import AnthropicProvider
from inferq.providers.base import (
    ChatModelProvider,
    Delta,
    Finish,
    GenerationRequest,
    Provider,
    StreamEvent,
)
from inferq.providers.llamacpp import LlamaCppProvider, TranscriptLlamaChatModel
from inferq.providers.openai import OpenAIProvider
from inferq.providers.registry import PROVIDERS, ModelRegistry, ModelSpec, RegistryError
from inferq.providers.sim import SimProvider, SimulatedChatModel, SimulatedFailure

__all__ = [
    "PROVIDERS",
    "AnthropicProvider",
    "ChatModelProvider",
    "Delta",
    "Finish",
    "GenerationRequest",
    "LlamaCppProvider",
    "ModelRegistry",
    "ModelSpec",
    "OpenAIProvider",
    "Provider",
    "RegistryError",
    "SimProvider",
    "SimulatedChatModel",
    "SimulatedFailure",
    "StreamEvent",
    "TranscriptLlamaChatModel",
]
