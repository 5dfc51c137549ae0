"""The environment a child process gets: an allow-list, not a deny-list.

A command, a Python script or a search worker gets only :data:`BASE_NAMES` (and ``LC_*``) plus
the names the ``child_env`` setting adds. Everything else stays behind, and the values of what
stays behind that look like credentials are registered as secrets (:mod:`.secrets`), so that if
one reaches a tool's output some other way it is redacted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from trinity.security.secrets import SECRETS

if TYPE_CHECKING:
    from trinity.config import Settings

BASE_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "COLUMNS",
        "LINES",
        "NO_COLOR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
"""What every child gets (besides ``LC_*``)."""

_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASS|CREDENTIAL|AUTH|SESSION|COOKIE|PRIVATE|WEBHOOK|DSN|SIGNATURE",
    re.IGNORECASE,
)
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})


def allowed(name: str, extra: Iterable[str] = ()) -> bool:
    return name in BASE_NAMES or name.startswith("LC_") or name in set(extra)


def child_environment(
    extra: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a child: the allowed variables of ``environ`` (default: this
    process's)."""
    names = set(extra)
    source = os.environ if environ is None else environ
    return {
        name: value
        for name, value in source.items()
        if name in BASE_NAMES or name.startswith("LC_") or name in names
    }


def looks_secret(name: str, value: str) -> bool:
    """Whether a removed variable's value should be treated as a secret: its name says so
    (``…KEY``, ``…TOKEN``, ``…PASS…``, ``…WEBHOOK…``), or the value has the mix of letters
    and digits of a generated credential and is not a plain path."""
    if name in _NOT_SECRET_NAMES or len(value) < 8:
        return False
    if _SECRET_NAME.search(name):
        return True
    if value.startswith(("/", "~", "./")) and " " not in value and "://" not in value:
        return False  # a path or a list of paths
    if "://" in value:
        return True  # a URL in an unlisted variable: DATABASE_URL, SLACK_WEBHOOK_URL
    letters = sum(c.isalpha() for c in value)
    digits = sum(c.isdigit() for c in value)
    return letters >= 4 and digits >= 2


def register_environment(
    extra: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> int:
    """Register the credential-like values of every variable a child does not get; returns how
    many were registered."""
    names = set(extra)
    source = os.environ if environ is None else environ
    count = 0
    for name, value in source.items():
        if allowed(name, names) or not looks_secret(name, value):
            continue
        count += SECRETS.add(value, f"environment variable {name}")
    return count


def register_settings(settings: Settings) -> None:
    """Register the secrets a process starts with: the providers' API keys of ``settings``, and
    the credential-like environment variables children do not get."""
    for name in ("openai_api_key", "compatible_api_key", "anthropic_api_key"):
        secret = getattr(settings, name)
        if secret is not None:
            SECRETS.add(secret.get_secret_value(), f"setting {name}")
    for hook in settings.alert_webhooks:  # a Slack webhook URL is a credential
        SECRETS.add(hook.url, "setting alert_webhooks")
        SECRETS.add_all(hook.headers.values(), "setting alert_webhooks")
    register_environment(settings.child_env)
