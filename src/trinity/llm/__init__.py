"""LLM providers behind one protocol, and structured output on top."""

from trinity.llm.base import LLMProvider, LLMRequest, LLMResponse, Message
from trinity.llm.registry import ModelSpec, check_model, make_provider, parse_model

__all__ = [
    "LLMProvider",
    "LLMRequest",
    "LLMResponse",
    "Message",
    "ModelSpec",
    "check_model",
    "make_provider",
    "parse_model",
]
