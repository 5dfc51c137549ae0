"""API keys in the OS keyring (``trinity secrets set/list/delete``), under the service
``trinity``.

The keyring cannot list what it holds, so the names set through here are kept in one more
entry (``__names__``). Values are never printed; ``list`` shows names only.
"""

from __future__ import annotations

from typing import Any

from trinity.errors import ConfigError

SERVICE = "trinity"
KEY_NAMES: dict[str, str] = {
    "OPENAI_API_KEY": "openai_api_key",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "OPENAI_COMPATIBLE_API_KEY": "compatible_api_key",
}
"""The names the settings read from the keyring (``keyring = true``), and their fields."""
_INDEX = "__names__"


def _keyring() -> Any:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("the keyring package is not installed") from None
    try:
        backend = keyring.get_keyring()
    except KeyringError as exc:
        raise ConfigError(f"no usable OS keyring: {exc}") from None
    if type(backend).__name__ == "Keyring" and type(backend).__module__.endswith("fail"):
        raise ConfigError(
            "no OS keyring on this machine (keyring found no backend); keep API keys in a "
            ".env file (mode 600) or in the environment instead"
        )
    return keyring


def _call(what: str, fn: Any, *args: Any) -> Any:
    from keyring.errors import KeyringError

    try:
        return fn(*args)
    except KeyringError as exc:
        raise ConfigError(f"keyring: cannot {what}: {exc}") from None


def names() -> list[str]:
    """The names set through :func:`set_secret`."""
    keyring = _keyring()
    index = _call("read the list of names", keyring.get_password, SERVICE, _INDEX) or ""
    return sorted(name for name in index.split(",") if name)


def get_secret(name: str) -> str | None:
    keyring = _keyring()
    value: str | None = _call(f"read {name}", keyring.get_password, SERVICE, name)
    return value


def set_secret(name: str, value: str) -> None:
    if not name or name == _INDEX or "," in name:
        raise ConfigError(f"not a usable secret name: {name!r}")
    if not value:
        raise ConfigError(f"{name}: the value is empty; nothing was stored")
    keyring = _keyring()
    _call(f"store {name}", keyring.set_password, SERVICE, name, value)
    known = set(names()) | {name}
    _call(
        "update the list of names", keyring.set_password, SERVICE, _INDEX, ",".join(sorted(known))
    )


def delete_secret(name: str) -> bool:
    """Remove ``name``; ``False`` when it was not there."""
    keyring = _keyring()
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(SERVICE, name)
        found = True
    except PasswordDeleteError:
        found = False
    known = set(names()) - {name}
    _call(
        "update the list of names", keyring.set_password, SERVICE, _INDEX, ",".join(sorted(known))
    )
    return found
