"""Settings: environment variables (``TRINITY_*``), then a ``.env`` file, then ``trinity.toml``,
then defaults.

API keys use the providers' usual variable names (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``)
and are held as ``SecretStr`` so they never print. They may also come from a ``.env`` file in the
working folder (refused unless only its owner can read it) or from the OS keyring
(``keyring = true``, ``trinity secrets set``).
"""

from __future__ import annotations

import fnmatch
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

V = TypeVar("V")


def best_match(table: Mapping[str, V], model: str) -> V | None:
    """The entry of ``table`` (keys: ``fnmatch`` globs over a model string) for ``model``: an
    exact key wins, then the longest matching pattern; ``None`` when none matches."""
    if model in table:
        return table[model]
    matches = [pattern for pattern in table if fnmatch.fnmatchcase(model, pattern)]
    return table[max(matches, key=len)] if matches else None


AlertKind = Literal[
    "error_rate", "p95_run_time", "stuck_runs", "budget_stops", "mcp_down", "approvals_waiting"
]


class AlertRule(BaseModel):
    """One alert (``[[alerts]]`` in trinity.toml): it fires while its measure is over
    ``threshold``, and resolves when it is not.

    ``error_rate``: failed over the runs that ended (not cancelled) in the last ``window_s``,
    once ``min_runs`` of them ended. ``p95_run_time``: seconds, of the runs that ended in the
    window. ``stuck_runs``: seconds the oldest running run has run. ``budget_stops``: runs
    stopped on a step, token or cost budget in the window. ``mcp_down``: MCP servers configured
    ``start = "eager"`` that do not start. ``approvals_waiting``: seconds the oldest run waiting
    for a person has waited."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: AlertKind
    threshold: float = Field(ge=0)
    window_s: float = Field(default=600.0, gt=0, le=7 * 86400)
    min_runs: int = Field(default=1, ge=1)
    severity: Literal["info", "warning", "critical"] = "warning"


class AlertWebhook(BaseModel):
    """Where alerts are sent (``[[alert_webhooks]]``): a JSON POST, or Slack's ``{"text"}``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", max_length=2000)
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)


class ModelOptions(BaseModel):
    """Settings for the models a pattern matches (the ``models`` setting); unset fields keep
    the general ``llm_*`` setting."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=16)
    max_tokens_ceiling: int | None = Field(default=None, ge=16)
    stream: bool | None = None
    idle_timeout_s: float | None = Field(default=None, gt=0)
    native_output: bool | None = None


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """The LLM settings that apply to one model: :meth:`Settings.for_model`."""

    max_tokens: int
    max_tokens_ceiling: int
    stream: bool
    idle_timeout_s: float
    native_output: bool


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
    llm_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Per LLM attempt; llm_timeout_s * (llm_max_attempts + 1) must fit in "
        "node_timeout_s",
    )
    llm_max_attempts: int = Field(default=4, ge=1, description="Tries per LLM call (429/5xx)")
    llm_max_tokens: int = Field(
        default=4096, ge=16, description="Output tokens an LLM reply may use (max_tokens)"
    )
    llm_max_tokens_ceiling: int = Field(
        default=16_384,
        ge=16,
        description="A reply cut off at max_tokens is asked again with twice the room, up to this",
    )
    llm_stream: bool = Field(
        default=True,
        description="Stream LLM replies: progress as text arrives, and the idle timeout",
    )
    llm_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A streamed reply that sends nothing for this long fails its attempt "
        "(which is retried); capped at llm_timeout_s",
    )
    llm_native_output: bool = Field(
        default=True,
        description="Ask servers to enforce structured replies (OpenAI json_schema, Anthropic "
        "tool use); a server that lacks it is asked with the schema in the prompt instead",
    )
    models: dict[str, ModelOptions] | None = Field(
        default=None,
        description="Per-model LLM settings: "
        '{"openai-compatible:*#llama*": {"max_tokens": 2048, "stream": false}}; keys are '
        "globs over the model string (exact name, then the longest pattern wins); fields: "
        "max_tokens, max_tokens_ceiling, stream, idle_timeout_s, native_output",
    )
    tool_timeout_s: float = Field(default=120.0, gt=0, description="Per tool call")
    structured_max_repairs: int = Field(default=2, ge=0)
    on_interrupted: Literal["recheck", "rerun", "ask", "fail"] = Field(
        default="recheck",
        description="What a resumed run does about a tool call its process died during: "
        "recheck (re-run an idempotent tool, else judge it by its file checks), rerun, ask, fail",
    )
    model_may_ask: bool = Field(
        default=False,
        description="Atlas may plan person.ask steps (a question the run waits on a person "
        "to answer) for a task in words; plan files always may",
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
    rate_limits: dict[str, dict[str, int]] | None = Field(
        default=None,
        description="Requests and tokens per minute per model: "
        '{"openai:*": {"requests_per_minute": 500, "tokens_per_minute": 200000}}; keys are '
        "globs over the model string, the first match applies; a call waits for its turn",
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where rate limit counts live: memory:// (this process) or "
        "redis://host:port (shared by every worker)",
    )
    api_rate_limits: dict[str, str] = Field(
        default_factory=lambda: {"read": "600/minute", "write": "60/minute"},
        description="API requests per token and route class (read: GET; write: starting, "
        "cancelling, approving), in the limits library's notation ('600/minute'); counted in "
        "rate_limit_storage",
    )
    api_max_body_bytes: int = Field(
        default=1_000_000, ge=1_000, description="Largest API request body accepted"
    )
    api_allow_scripted: bool = Field(
        default=False,
        description="Let API requests use scripted:PATH models (they read files on the server)",
    )
    orphan_scan_s: float = Field(
        default=10.0,
        gt=0,
        description="How often trinity serve --resume-orphans looks for runs whose process died",
    )
    alerts: list[AlertRule] = Field(
        default_factory=list,
        description="Alert rules ([[alerts]] in trinity.toml: name, kind, threshold, window_s, "
        "min_runs, severity), evaluated by trinity serve and trinity alerts check",
    )
    alert_webhooks: list[AlertWebhook] = Field(
        default_factory=list,
        description="Where alerts go besides the log and the dashboard ([[alert_webhooks]]: "
        "url, format json or slack, headers)",
    )
    alert_interval_s: float = Field(
        default=30.0, gt=0, description="How often trinity serve evaluates the alert rules"
    )
    alert_cooldown_s: float = Field(
        default=600.0,
        ge=0,
        description="The least time between two notifications of one alert (a firing alert is "
        "told again after it; one that resolves and fires again within it is not)",
    )
    trace_content: bool = Field(
        default=False,
        description="Record prompts and completions on chat spans (gen_ai.input.messages / "
        "gen_ai.output.messages, redacted, each cut at 20,000 characters) when traces are on",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="A folder where every Trinity process on this machine keeps its Prometheus "
        "metrics (multiprocess mode): trinity metrics serve and /metrics then show them all",
    )
    keyring: bool = Field(
        default=False,
        description="Read API keys that are not set otherwise from the OS keyring "
        "(trinity secrets set NAME)",
    )
    sandbox: Literal["strict", "workspace-write", "off"] = Field(
        default="strict",
        description="How shell.run and python.run are contained (bubblewrap): strict (system "
        "folders, Python and the workspace only), workspace-write (the whole host read-only), "
        "off; see docs/security.md",
    )
    sandbox_network: bool = Field(
        default=False, description="Give sandboxed commands the host's network (default: none)"
    )
    sandbox_required: bool = Field(
        default=False,
        description="Refuse commands when bubblewrap cannot work here, instead of running them "
        "unsandboxed with a warning",
    )
    child_env: list[str] = Field(
        default_factory=list,
        description="Environment variables passed to commands and MCP servers besides the "
        "basic ones (PATH, HOME, LANG, LC_*, TERM, TZ, USER …); all others are removed",
    )
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

    @model_validator(mode="after")
    def _time_limits_nest(self) -> Settings:
        # A silent model must fail with its own error ("no reply within 60 s after 4
        # attempts"), not be cut off by the node timeout first with a vaguer one.
        # One attempt's worth of room is kept for the waits between attempts.
        worst = self.llm_timeout_s * (self.llm_max_attempts + 1)
        if self.node_timeout_s is not None and worst > self.node_timeout_s:
            raise ValueError(
                f"llm_timeout_s x (llm_max_attempts + 1) = {self.llm_timeout_s:g} s x "
                f"{self.llm_max_attempts + 1} = {worst:g} s is longer than node_timeout_s "
                f"({self.node_timeout_s:g} s): a model that never answers would be cut off by "
                "the node timeout before its own error shows (the + 1 is room for the waits "
                "between attempts). Lower llm_timeout_s or llm_max_attempts, or raise "
                "node_timeout_s"
            )
        return self

    def for_model(self, model: str) -> ModelSettings:
        """The LLM settings for ``model``: its entry in :attr:`models`, else the ``llm_*`` ones."""
        own = best_match(self.models or {}, model) or ModelOptions()

        def pick(value: V | None, default: V) -> V:
            return default if value is None else value

        return ModelSettings(
            max_tokens=pick(own.max_tokens, self.llm_max_tokens),
            max_tokens_ceiling=pick(own.max_tokens_ceiling, self.llm_max_tokens_ceiling),
            stream=pick(own.stream, self.llm_stream),
            idle_timeout_s=min(
                pick(own.idle_timeout_s, self.llm_idle_timeout_s), self.llm_timeout_s
            ),
            native_output=pick(own.native_output, self.llm_native_output),
        )

    def model_post_init(self, context: Any) -> None:
        if self.keyring:
            from trinity.security.keyring_store import KEY_NAMES, get_secret
            from trinity.security.secrets import SECRETS

            for name, field in KEY_NAMES.items():
                if getattr(self, field) is None:
                    value = get_secret(name)
                    if value:
                        SECRETS.add(value, f"keyring {name}")
                        object.__setattr__(self, field, SecretStr(value))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            PrivateDotEnv(settings_cls),
            TomlConfigSettingsSource(settings_cls),
        )


class PrivateDotEnv(DotEnvSettingsSource):
    """Settings (API keys, mostly) from a ``.env`` file in the working folder.

    A ``.env`` holds secrets, so it is refused when users other than its owner may read it, and
    every value in it is registered as a secret (redacted wherever it would appear)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path = Path(".env")) -> None:
        present = path.is_file()
        if present:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise ValueError(
                    f"{path} may be read by other users (mode {mode:04o}); it holds secrets, "
                    f"so it is not used: run `chmod 600 {path}`"
                )
            from dotenv import dotenv_values

            from trinity.security.secrets import SECRETS

            for name, value in dotenv_values(path, encoding="utf-8").items():
                SECRETS.add(value, f"{path} {name}")
        super().__init__(
            settings_cls, env_file=path if present else None, env_file_encoding="utf-8"
        )
