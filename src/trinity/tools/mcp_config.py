"""MCP server configuration: the common ``mcpServers`` JSON shape plus a few Trinity extras.

A file looks like the one Claude Desktop, Cursor or VS Code read::

    {
      "mcpServers": {
        "time": {"command": "python", "args": ["-m", "mcp_server_time"]},
        "docs": {"url": "http://127.0.0.1:8000/mcp",
                 "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}}
      }
    }

A server with ``command`` is started as a child process and spoken to over stdio; one with
``url`` is reached over streamable HTTP. Trinity adds, per server:

- ``start``: ``"lazy"`` (default: started on first use) or ``"eager"`` (at ``ToolHub.start()``);
- ``timeout_s``: default seconds per tool call on this server;
- ``startup_timeout_s``: seconds to spawn/connect and finish the MCP handshake;
- ``enabled``: ``false`` keeps the entry but never starts it (``"disabled": true`` is accepted
  too, as some clients write it).

``${NAME}`` in ``env`` values and ``headers`` is replaced by the environment variable ``NAME``
when the config is loaded, so tokens need not live in the file. The same models parse a plain
dict (``trinity.toml``'s ``[mcp_servers.NAME]`` tables) through :func:`parse_mcp_config`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trinity.errors import ConfigError, InputError
from trinity.security.inputs import HostileInputError, load_json
from trinity.security.secrets import SECRETS

SERVER_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""Server names become tool namespaces (``name.tool``), so no dots, spaces or slashes."""

_SERVER_NAME = re.compile(SERVER_NAME_PATTERN)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys other MCP clients write into the same file; accepted and ignored so a shared file loads.
_FOREIGN_KEYS = frozenset({"autoApprove", "alwaysAllow", "description", "disabledTools"})


class _ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=SERVER_NAME_PATTERN)]
    """The server's namespace: its tools are called ``name.tool``. Taken from the config key."""
    start: Literal["lazy", "eager"] = "lazy"
    """``lazy``: started on first use; ``eager``: started by ``ToolHub.start()``."""
    timeout_s: Annotated[float | None, Field(gt=0, le=86_400)] = None
    """Default seconds per tool call (a call's own ``timeout_s`` wins; else the hub default)."""
    startup_timeout_s: Annotated[float, Field(gt=0, le=3_600)] = 30.0
    """Seconds to start the server and finish the MCP handshake."""
    enabled: bool = True
    """A disabled server is known (calls say so) but never started."""


class StdioServerConfig(_ServerBase):
    """A server run as a child process, spoken to over its stdin/stdout."""

    type: Literal["stdio"] = "stdio"
    command: Annotated[str, Field(min_length=1)]
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Added to a minimal inherited environment (PATH, HOME, …), never the whole of ours."""
    cwd: str | None = None
    sandbox: Literal["strict", "workspace-write", "off"] = "off"
    """Run the server under bubblewrap (:mod:`trinity.tools.sandbox`); it may then write only
    its ``cwd`` (default: the folder Trinity runs in). Off by default: many servers need your
    files or the network."""
    sandbox_network: bool = False
    """A sandboxed server's network: none unless this is set."""


class HttpServerConfig(_ServerBase):
    """A server reached over streamable HTTP."""

    type: Literal["http", "streamable-http", "streamable_http", "streamableHttp"] = "http"
    url: Annotated[str, Field(pattern=r"^https?://")]
    headers: dict[str, str] = Field(default_factory=dict)


ServerConfig = StdioServerConfig | HttpServerConfig
"""One server's configuration."""


class McpConfig(BaseModel):
    """Every configured server, in file order, keyed by name."""

    model_config = ConfigDict(frozen=True)

    servers: dict[str, ServerConfig] = Field(default_factory=dict)

    def enabled(self) -> list[ServerConfig]:
        """The servers to run."""
        return [server for server in self.servers.values() if server.enabled]

    def only(self, names: list[str] | None) -> McpConfig:
        """These servers alone (``None``: all); a name that is not configured, or names a
        disabled server, is an :class:`InputError` naming the ones there are."""
        if names is None:
            return self
        unknown = [name for name in names if name not in self.servers]
        if unknown:
            known = ", ".join(self.servers) or "none"
            raise InputError(f"unknown MCP server(s) {unknown}; configured: {known}")
        disabled = [name for name in names if not self.servers[name].enabled]
        if disabled:
            raise InputError(f"MCP server(s) {disabled} are disabled in the configuration")
        return McpConfig(servers={n: s for n, s in self.servers.items() if n in names})


def load_mcp_config(path: str | Path) -> McpConfig:
    """Read an ``mcpServers`` JSON file. Errors name the file, the server and the field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read MCP config: {exc.strerror or exc}") from None
    try:
        data = load_json(text)
    except HostileInputError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    return parse_mcp_config(data, source=source)


def parse_mcp_config(data: Any, *, source: str = "MCP config") -> McpConfig:
    """Build an :class:`McpConfig` from parsed JSON/TOML.

    Accepts ``{"mcpServers": {...}}`` (the common file shape), ``{"servers": {...}}`` (VS Code's
    shape, and ``trinity.toml``'s ``[mcp_servers.NAME]`` tables) or the bare ``{name: {...}}``
    mapping. ``source`` (a file name, ``"trinity.toml [mcp]"``) starts every error message.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected an object with 'mcpServers', got {_kind(data)}")
    servers = data.get("mcpServers", data.get("servers", data))
    if not isinstance(servers, Mapping):
        raise ConfigError(f"{source}: 'mcpServers' must be an object, got {_kind(servers)}")
    parsed: dict[str, ServerConfig] = {}
    for name, entry in servers.items():
        parsed[name] = parse_server_config(name, entry, source=source)
    return McpConfig(servers=parsed)


def parse_server_config(name: str, entry: Any, *, source: str = "MCP config") -> ServerConfig:
    """One server's entry (the value under its name) as a typed config."""
    where = f"{source}: server {name!r}"
    if not isinstance(name, str) or not _SERVER_NAME.match(name):
        raise ConfigError(
            f"{where}: invalid name; use 1-64 letters, digits, '_' or '-' "
            "(it becomes the tool namespace, as in name.tool)"
        )
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected an object, got {_kind(entry)}")
    fields = {key: value for key, value in entry.items() if key not in _FOREIGN_KEYS}
    if "disabled" in fields:  # Cline's spelling of enabled = false
        disabled = fields.pop("disabled")
        if not isinstance(disabled, bool):
            raise ConfigError(f"{where}: field 'disabled': expected true or false")
        fields.setdefault("enabled", not disabled)
    if "name" in fields and fields["name"] != name:
        raise ConfigError(f"{where}: field 'name': must match the key ({name!r}) if given")
    fields["name"] = name
    model = _model_for(fields, where)
    try:
        _expand_env_refs(fields, where)
        return model.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None


def _model_for(fields: Mapping[str, Any], where: str) -> type[ServerConfig]:
    kind = fields.get("type")
    if kind == "sse":
        raise ConfigError(
            f"{where}: field 'type': the SSE transport is deprecated and not supported; "
            "use the server's streamable HTTP endpoint"
        )
    has_command, has_url = "command" in fields, "url" in fields
    if has_command and has_url:
        raise ConfigError(f"{where}: give either 'command' (stdio) or 'url' (HTTP), not both")
    if has_url or (kind is not None and kind != "stdio"):
        return HttpServerConfig
    if has_command or kind == "stdio":
        return StdioServerConfig
    raise ConfigError(
        f"{where}: needs 'command' (a program to run over stdio) or 'url' (streamable HTTP)"
    )


def _expand_env_refs(fields: dict[str, Any], where: str) -> None:
    """Replace ``${NAME}`` in env values and headers; a missing variable is an error."""
    for key in ("env", "headers"):
        table = fields.get(key)
        if not isinstance(table, Mapping):
            continue  # validation reports the wrong type

        def substitute(match: re.Match[str], field: str = key) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                raise ConfigError(
                    f"{where}: field '{field}': environment variable {match.group(1)} is not set"
                )
            # What a config pulls in by name is a secret, whatever its name (a token, a key).
            SECRETS.add(value, f"${{{match.group(1)}}} in {where}")
            return value

        fields[key] = {
            name: _ENV_REF.sub(substitute, value) if isinstance(value, str) else value
            for name, value in table.items()
        }


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"field '{field}': {message}" if field else message)
    return "; ".join(parts)


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return names.get(type(value), type(value).__name__)
