"""Which network addresses ``http.fetch`` may reach: the SSRF policy, as small pure functions.

A URL is refused before any connection when its scheme is not http(s), when it is ambiguous
(credentials, control characters, a malformed numeric host), or when its host is, or resolves
to, an address that is not on the public internet: loopback, private, link-local (the cloud
metadata service lives there), CGNAT, multicast, reserved, unspecified, and the IPv6 forms of
all of these, including IPv4 addresses wrapped in IPv6 (mapped, NAT64, 6to4). Every resolved
address is checked, not just the first: a name that answers with one public and one private
address is refused, because the caller connects to an address it picked from that answer.

An :class:`AllowList` (hosts, addresses or CIDRs) opens exceptions, which is how tests fetch
from a server on 127.0.0.1.

The only I/O here is :func:`resolve_and_check`, whose resolver is injectable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses`` as strings; the default asks the system resolver."""

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_CHARS = 8192


class NetworkPolicyError(ValueError):
    """A URL or address the policy refuses; the message says which rule and why."""


def _net(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr)


# Order matters: the first matching row names the refusal, so specific rows come first.
_V4_FORBIDDEN: tuple[tuple[IPNetwork, str], ...] = (
    (_net("169.254.169.254/32"), "the cloud metadata endpoint (link-local)"),
    (_net("0.0.0.0/32"), "the unspecified address"),
    (_net("0.0.0.0/8"), "a 'this network' address (0.0.0.0/8)"),
    (_net("127.0.0.0/8"), "a loopback address (127.0.0.0/8)"),
    (_net("10.0.0.0/8"), "a private address (10.0.0.0/8)"),
    (_net("172.16.0.0/12"), "a private address (172.16.0.0/12)"),
    (_net("192.168.0.0/16"), "a private address (192.168.0.0/16)"),
    (_net("100.64.0.0/10"), "a carrier-grade NAT address (100.64.0.0/10)"),
    (_net("169.254.0.0/16"), "a link-local address (169.254.0.0/16)"),
    (_net("192.0.0.0/24"), "an IETF protocol assignment (192.0.0.0/24)"),
    (_net("192.0.2.0/24"), "a documentation address (192.0.2.0/24)"),
    (_net("198.51.100.0/24"), "a documentation address (198.51.100.0/24)"),
    (_net("203.0.113.0/24"), "a documentation address (203.0.113.0/24)"),
    (_net("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"),
    (_net("192.88.99.0/24"), "a reserved 6to4 relay address (192.88.99.0/24)"),
    (_net("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"),
    (_net("255.255.255.255/32"), "the broadcast address"),
    (_net("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"),
)
_V6_FORBIDDEN: tuple[tuple[IPNetwork, str], ...] = (
    (_net("::/128"), "the unspecified address (::)"),
    (_net("::1/128"), "the IPv6 loopback address (::1)"),
    (_net("::/96"), "an IPv4-compatible IPv6 address (::/96, deprecated)"),
    (_net("64:ff9b:1::/48"), "a local-use NAT64 address (64:ff9b:1::/48)"),
    (_net("100::/64"), "a discard-only address (100::/64)"),
    (_net("2001::/32"), "a Teredo tunnelling address (2001::/32)"),
    (_net("2001:db8::/32"), "a documentation address (2001:db8::/32)"),
    (_net("2001::/23"), "an IETF protocol assignment (2001::/23)"),
    (_net("fc00::/7"), "a unique-local (private) IPv6 address (fc00::/7)"),
    (_net("fe80::/10"), "a link-local IPv6 address (fe80::/10)"),
    (_net("fec0::/10"), "a site-local IPv6 address (fec0::/10, deprecated)"),
    (_net("ff00::/8"), "a multicast IPv6 address (ff00::/8)"),
)
_NAT64 = _net("64:ff9b::/96")
_LOCALHOST_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


# -- addresses ----------------------------------------------------------------------------------


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and routes to: IPv4-mapped (``::ffff:a.b.c.d``),
    NAT64 (``64:ff9b::a.b.c.d``) or 6to4 (``2002:aabb:ccdd::``). ``None`` for anything else."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from, or ``None`` when it is a public address."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = address_refusal(inner)
        return None if reason is None else f"an IPv6 address wrapping {inner}, {reason}"
    table = _V4_FORBIDDEN if isinstance(ip, ipaddress.IPv4Address) else _V6_FORBIDDEN
    for network, reason in table:
        if ip in network:
            return reason
    if not ip.is_global:  # a special-purpose range the table does not name
        return "not a globally routable address"
    return None


def normalise_address(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 addresses as the IPv4 address they are (``::ffff:127.0.0.1`` is
    127.0.0.1 on the wire), so the allow-list and the refusal name the same thing."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# -- allow-list -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllowList:
    """Exceptions to the policy: host names (exact, case-insensitive) and networks.

    A host name entry lets that name through whatever it resolves to; an address or CIDR entry
    lets those addresses through whatever name led to them.
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str] | None) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries or ():
            entry = raw.strip().lower()
            if entry.startswith("[") and entry.endswith("]"):
                entry = entry[1:-1]
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not entry or not _HOST_CHARS.fullmatch(entry):
                    message = f"allow-list entry {raw!r} is not a host, address or CIDR"
                    raise ValueError(message) from None
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates = {ip, normalise_address(ip)}
        return any(
            c in net for c in candidates for net in self.networks if c.version == net.version
        )


def check_address(ip: IPAddress, allow: AllowList = AllowList(), *, subject: str = "") -> None:
    """Raise :class:`NetworkPolicyError` unless ``ip`` is public or allowed. ``subject`` says
    how the caller got to ``ip`` (``host 'x' resolves to 10.0.0.1, which is``)."""
    if allow.allows_address(ip):
        return
    reason = address_refusal(ip)
    if reason is None:
        return
    raise NetworkPolicyError(f"{subject or f'{ip} is'} {reason}; refused")


# -- URLs -------------------------------------------------------------------------------------


_HOST_CHARS = re.compile(r"[a-z0-9._-]+")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True, slots=True)
class Target:
    """One URL, parsed once: what to resolve, whom to connect to, and what to ask for."""

    url: str
    scheme: str
    given_host: str
    """The host as the URL spells it (lower-cased), for messages."""
    host: str
    """Lower-case ASCII (IDNA) host without a trailing dot, or the canonical IP literal."""
    port: int
    path: str
    """Path and query to send, never empty (``/``); the fragment is dropped."""
    ip: IPAddress | None
    """Set when the host is an IP literal (in any spelling the resolver would accept)."""

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Parse and vet a URL's shape. Raises :class:`NetworkPolicyError` with the reason."""
    if len(url) > MAX_URL_CHARS:
        raise NetworkPolicyError(f"URL is longer than {MAX_URL_CHARS} characters")
    bad = _FORBIDDEN_URL_CHARS.search(url)
    if bad:
        # urlsplit silently drops tabs and newlines, and browsers read '\' as '/': either
        # lets one URL mean two things to two parsers.
        raise NetworkPolicyError(f"URL contains a forbidden character {bad.group()!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced '[' in the host
        raise NetworkPolicyError(f"URL does not parse: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme!r}" if scheme else "none"
        raise NetworkPolicyError(f"scheme {shown} is not allowed; only http and https")
    if "@" in parts.netloc:
        raise NetworkPolicyError("URLs with credentials (user@host) are not allowed")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise NetworkPolicyError("URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise NetworkPolicyError("URL has an invalid port") from None
    if port == 0:
        raise NetworkPolicyError("URL has an invalid port")
    host, ip = _parse_host(raw_host, bracketed=parts.netloc.startswith("["))
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    default_port = 443 if scheme == "https" else 80
    return Target(url, scheme, raw_host, host, port or default_port, path, ip)


def _parse_host(raw: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    ip: IPAddress | None
    if bracketed:
        try:
            ip = ipaddress.IPv6Address(raw)
        except ValueError:
            raise NetworkPolicyError(f"invalid IPv6 literal [{raw}]") from None
        return str(ip), ip
    try:
        ascii_host = raw.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise NetworkPolicyError(f"host {raw!r} is not a valid host name") from None
    ascii_host = ascii_host.removesuffix(".")
    if not ascii_host or not _HOST_CHARS.fullmatch(ascii_host):
        raise NetworkPolicyError(f"host {raw!r} contains characters a host name cannot")
    ip = parse_ipv4_host(ascii_host)
    return (str(ip), ip) if ip is not None else (ascii_host, None)


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host means, in every spelling ``inet_aton`` (and so the
    system resolver) accepts: ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``.

    Returns ``None`` for a host name. Follows the URL standard: a host whose last label is a
    number is an IPv4 address, and one that does not parse as one is refused rather than
    passed to a resolver that may read it differently.
    """
    labels = host.split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    try:
        numbers = [_parse_ipv4_label(label) for label in labels]
    except ValueError:
        raise NetworkPolicyError(f"host {host!r} is a malformed numeric address") from None
    if not 1 <= len(numbers) <= 4:
        raise NetworkPolicyError(f"host {host!r} is a malformed numeric address")
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise NetworkPolicyError(f"host {host!r} is a numeric address out of range")
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _parse_ipv4_label(label: str) -> int:
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)  # raises for 08, 09: inet_aton refuses those too
    return int(label, 10)


def check_host_name(target: Target, allow: AllowList = AllowList()) -> None:
    """Refuse the names that mean this machine before asking any resolver about them."""
    if target.ip is not None or allow.allows_host(target.host):
        return
    if target.host in _LOCALHOST_NAMES or target.host.endswith(".localhost"):
        raise NetworkPolicyError(f"host {target.host!r} names this machine (loopback); refused")


def check_target(target: Target, allow: AllowList = AllowList()) -> None:
    """Everything that can be decided without a resolver: literal addresses and local names."""
    if target.ip is not None:
        spelled_differently = target.ip.version == 4 and target.given_host != target.host
        subject = f"host {target.given_host!r} means {target.ip}, which is"
        check_address(target.ip, allow, subject=subject if spelled_differently else "")
    else:
        check_host_name(target, allow)


def check_resolved(
    host: str, addresses: Iterable[str], allow: AllowList = AllowList()
) -> list[IPAddress]:
    """Vet every address ``host`` resolved to; the caller must connect to one of these."""
    parsed = []
    for text in addresses:
        try:
            parsed.append(ipaddress.ip_address(text.split("%", 1)[0]))  # drop any zone id
        except ValueError:
            message = f"host {host!r} resolved to {text!r}, which is not an address"
            raise NetworkPolicyError(message) from None
    if not parsed:
        raise NetworkPolicyError(f"host {host!r} did not resolve to any address")
    if not allow.allows_host(host):
        for ip in parsed:
            check_address(ip, allow, subject=f"host {host!r} resolves to {ip}, which is")
    return parsed


# -- resolution (the one I/O step) ------------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    """Ask the operating system's resolver, as a socket connect would."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_and_check(
    target: Target, allow: AllowList = AllowList(), resolver: Resolver | None = None
) -> IPAddress:
    """The vetted address to connect to for ``target``: its literal, or the first resolved
    address after every resolved address passed. Refusals raise :class:`NetworkPolicyError`."""
    check_target(target, allow)
    if target.ip is not None:
        return target.ip
    try:
        addresses = await (resolver or system_resolver)(target.host, target.port)
    except OSError as exc:
        raise NetworkPolicyError(f"host {target.host!r} could not be resolved: {exc}") from None
    return check_resolved(target.host, addresses, allow)[0]
