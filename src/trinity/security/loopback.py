"""Loopback addresses, however they are spelt, and the DNS-rebinding check for servers bound
to one: a web page the user visits may resolve its own name to 127.0.0.1 and drive a local
server; the ``Host`` (and ``Origin``) of such requests name the page's host, not a loopback
one, and are refused."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback one (``127.0.0.1``,
    ``localhost``, ``::1``, ``127.1``, ``0:0:0:0:0:0:0:1``…)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def loopback_names(host: str) -> set[str]:
    """The host names a request to a server bound to ``host`` may carry."""
    return {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}


def _name(authority: str) -> str:
    """``host:port`` → ``host`` (``[::1]:8080`` → ``[::1]``)."""
    if authority.startswith("["):
        return authority.split("]")[0] + "]"
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def allowed_request(host_header: str | None, origin: str | None, names: set[str]) -> bool:
    """Whether a request's ``Host`` and ``Origin`` (when sent) name one of ``names``."""
    if host_header is None or _name(host_header.strip().lower()) not in names:
        return False
    if origin:
        parts = urlsplit(origin.strip().lower())
        if parts.scheme not in ("http", "https") or _name(parts.netloc) not in names:
            return False
    return True
