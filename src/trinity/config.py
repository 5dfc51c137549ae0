"""Settings: environment variables (``TRINITY_*``), then ``trinity.toml``, then defaults.

API keys use the providers' usual variable names (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``)
and are held as ``SecretStr`` so they never print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRINITY_",
        extra="ignore",
        toml_file="trinity.toml",
        validate_default=True,
        populate_by_name=True,
    )

    database_url: str | None = Field(
        default=None, description="sqlite:///path or a path; default ~/.trinity/trinity.db"
    )
    workspace: Path = Field(default=Path("workspace"), description="Folder the tools work in")
    model: str | None = Field(default=None, description="Default model string")
    max_task_chars: int = Field(default=20_000, ge=1, description="Longest task text accepted")
    max_plan_file_bytes: int = Field(default=1_000_000, ge=1)
    max_steps: int = Field(default=200, ge=1, description="Graph steps per run")
    timeout_s: float = Field(default=600.0, gt=0, description="Run deadline in seconds")
    token_budget: int | None = Field(
        default=None, ge=1, description="LLM tokens (in + out) a run may use; none by default"
    )
    cost_budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="US dollars of LLM calls a run may spend (priced from the price table); "
        "none by default",
    )
    prices: dict[str, dict[str, float]] | None = Field(
        default=None,
        description="Extra model prices, $ per million tokens: "
        '{"openai:my-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}; '
        "keys are globs over the model string and win over the built-in table",
    )
    node_timeout_s: float | None = Field(
        default=300.0,
        gt=0,
        description="Per node (one agent's turn: a plan with its LLM retries, a tool call)",
    )
    max_replans: int | None = Field(
        default=None,
        ge=0,
        description="New plans Atlas may make after failures; none: the Meta-Planner chooses",
    )
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Per LLM call")
    llm_max_attempts: int = Field(default=4, ge=1, description="Tries per LLM call (429/5xx)")
    tool_timeout_s: float = Field(default=120.0, gt=0, description="Per tool call")
    structured_max_repairs: int = Field(default=2, ge=0)
    on_interrupted: Literal["recheck", "rerun", "ask", "fail"] = Field(
        default="recheck",
        description="What a resumed run does about a tool call its process died during: "
        "recheck (re-run an idempotent tool, else judge it by its file checks), rerun, ask, fail",
    )
    mcp_servers_file: Path | None = Field(
        default=None,
        description='MCP servers to use, in the common {"mcpServers": {...}} JSON shape',
    )
    mcp_servers: dict[str, Any] | None = Field(
        default=None,
        description="The same inline ([mcp_servers.NAME] tables in trinity.toml); "
        "mcp_servers_file wins when both are set",
    )
    permissions_file: Path | None = Field(
        default=None, description="Tool permission policy (YAML); see trinity.tools.permissions"
    )
    permissions: dict[str, Any] | None = Field(
        default=None,
        description="The same policy inline (a [permissions] table in trinity.toml); "
        "permissions_file wins when both are set",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TRINITY_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TRINITY_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    compatible_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TRINITY_COMPATIBLE_API_KEY", "OPENAI_COMPATIBLE_API_KEY"),
        description="Key for openai-compatible: servers (never OPENAI_API_KEY)",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TRINITY_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRINITY_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL"),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))
