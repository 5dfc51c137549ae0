"""Model strings -> providers.

=================================================  =========================================
``scripted:PATH``                                  replies from a script file (offline)
``openai:MODEL``                                   OpenAI (``OPENAI_API_KEY``; ``OPENAI_BASE_URL``)
``anthropic:MODEL``                                Anthropic (``ANTHROPIC_API_KEY``)
``openai-compatible:URL#MODEL``                    any OpenAI-compatible server (Ollama, vLLM,
                                                   llama.cpp, OpenRouter…); key optional, from
                                                   ``OPENAI_COMPATIBLE_API_KEY`` only
=================================================  =========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from trinity.config import Settings
from trinity.errors import ConfigError
from trinity.llm.base import LLMProvider

Kind = Literal["scripted", "openai", "anthropic", "openai-compatible"]
KINDS: tuple[Kind, ...] = ("scripted", "openai", "anthropic", "openai-compatible")
USAGE = "expected scripted:PATH, openai:MODEL, anthropic:MODEL or openai-compatible:URL#MODEL"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    kind: Kind
    name: str
    """Model name for the API, or the script path for ``scripted``."""
    base_url: str | None = None

    @property
    def key_env(self) -> str | None:
        return {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}.get(self.kind)


def parse_model(model: str) -> ModelSpec:
    text = model.strip()
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS or not rest.strip():
        raise ConfigError(f"unknown model string {model!r}: {USAGE}")
    rest = rest.strip()
    if kind == "openai-compatible":
        url, hash_, name = rest.partition("#")
        if not hash_ or not name or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"bad model string {model!r}: expected openai-compatible:http(s)://host/v1#MODEL"
            )
        return ModelSpec("openai-compatible", name, base_url=url)
    return ModelSpec(kind, rest)


def check_model(model: str, settings: Settings) -> ModelSpec:
    """Validate a model string and that its key is configured, without making anything."""
    spec = parse_model(model)
    if spec.kind == "openai" and settings.openai_api_key is None:
        raise ConfigError(f"model {model!r} needs an API key: set OPENAI_API_KEY")
    if spec.kind == "anthropic" and settings.anthropic_api_key is None:
        raise ConfigError(f"model {model!r} needs an API key: set ANTHROPIC_API_KEY")
    if spec.kind == "scripted":
        from trinity.llm.scripted import load_script

        load_script(spec.name)
    return spec


def make_provider(model: str, settings: Settings) -> LLMProvider:
    spec = check_model(model, settings)
    if spec.kind == "scripted":
        from trinity.llm.scripted import ScriptedProvider

        return ScriptedProvider.from_file(spec.name)
    from trinity.llm.retry import RetryPolicy

    retry = RetryPolicy(max_attempts=settings.llm_max_attempts)
    own = settings.for_model(model)
    options: dict[str, Any] = {
        "timeout_s": settings.llm_timeout_s,
        "retry": retry,
        "stream": own.stream,
        "idle_timeout_s": own.idle_timeout_s,
        "native_output": own.native_output,
    }
    if spec.kind == "anthropic":
        from trinity.llm.anthropic_provider import AnthropicProvider

        assert settings.anthropic_api_key is not None
        return AnthropicProvider(
            model,
            model_name=spec.name,
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            **options,
        )
    from trinity.llm.openai_provider import OpenAIProvider

    if spec.kind == "openai":
        assert settings.openai_api_key is not None
        key, base_url = settings.openai_api_key.get_secret_value(), settings.openai_base_url
    else:
        # Never OPENAI_API_KEY: that key must not go to whatever server the URL names.
        secret = settings.compatible_api_key
        key = secret.get_secret_value() if secret else "none"
        base_url = spec.base_url
    return OpenAIProvider(
        model,
        model_name=spec.name,
        api_key=key,
        base_url=base_url,
        api_key_env="OPENAI_API_KEY" if spec.kind == "openai" else "OPENAI_COMPATIBLE_API_KEY",
        **options,
    )
