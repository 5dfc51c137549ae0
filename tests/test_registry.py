"""Model strings: parsing, key checks, and which key goes where."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from trinity.config import Settings
from trinity.errors import ConfigError
from trinity.llm.registry import check_model, make_provider, parse_model


def test_model_strings_parse() -> None:
    assert parse_model("openai:gpt-4o-mini").name == "gpt-4o-mini"
    assert parse_model("anthropic:claude-x").kind == "anthropic"
    spec = parse_model("openai-compatible:http://127.0.0.1:11434/v1#llama3.1:8b")
    assert (spec.kind, spec.base_url, spec.name) == (
        "openai-compatible",
        "http://127.0.0.1:11434/v1",
        "llama3.1:8b",
    )
    for bad in (
        "gpt-4",
        "foo:bar",
        "openai:",
        "openai-compatible:localhost#m",
        "openai-compatible:http://x",
    ):
        with pytest.raises(ConfigError, match="model string"):
            parse_model(bad)


def test_real_providers_need_their_key() -> None:
    with pytest.raises(ConfigError, match="set OPENAI_API_KEY"):
        check_model("openai:gpt-4o-mini", Settings())
    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY"):
        check_model("anthropic:claude-x", Settings())
    check_model("openai-compatible:http://127.0.0.1:1/v1#m", Settings())  # a key is optional


async def test_the_openai_key_never_goes_to_a_compatible_server() -> None:
    settings = Settings(openai_api_key=SecretStr("sk-openai-secret"))
    provider = make_provider("openai-compatible:http://127.0.0.1:9/v1#m", settings)
    try:
        assert provider._api_key == "none"  # type: ignore[attr-defined]
    finally:
        await provider.aclose()
    settings = Settings(
        openai_api_key=SecretStr("sk-openai-secret"), compatible_api_key=SecretStr("local-key")
    )
    provider = make_provider("openai-compatible:http://127.0.0.1:9/v1#m", settings)
    try:
        assert provider._api_key == "local-key"  # type: ignore[attr-defined]
    finally:
        await provider.aclose()
