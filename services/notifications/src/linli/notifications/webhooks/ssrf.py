"""SSRF guard for webhook endpoint URLs.

Two layers: `check_url` is pure (scheme, shape, literal addresses, including the
legacy numeric IPv4 spellings such as `0x7f000001`, `2130706433` or `127.1`), and
`resolve_checked` resolves a host name and refuses it when any of its addresses is
internal. The delivery client resolves again at connect time and connects to the
address it checked (see delivery.py), so a DNS answer that changes between
registration and delivery (DNS rebinding) cannot reach an internal address.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)
_BLOCKED_NAMES = ("localhost", "localhost.localdomain", "metadata", "metadata.google.internal")
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
MAX_URL_LENGTH = 2048


class UnsafeUrl(ValueError):
    """An endpoint URL the guard refuses; the message is safe to show the caller."""


@dataclass(frozen=True)
class Target:
    """The parts of a checked URL a connection needs."""

    scheme: str
    host: str
    port: int
    ip: IPAddress | None
    """The address when the host is an IP literal."""


def is_internal(ip: IPAddress) -> bool:
    """True for every address a webhook must never reach."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and is_internal(embedded):
            return True
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return True
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )


def _literal(host: str) -> IPAddress | None:
    """The address a host denotes literally, including legacy IPv4 spellings."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host) and any(c.isdigit() for c in host):
        try:
            # inet_aton accepts the forms browsers and libcs accept: 0x7f000001,
            # 2130706433, 0177.0.0.1, 127.1.
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url: str, *, allow_insecure: bool = False) -> Target:
    """Check the shape of an endpoint URL; raises UnsafeUrl.

    In production only https to public addresses passes. `allow_insecure` (development)
    also allows http and loopback or private receivers.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl("url must be a non-empty string of at most 2048 characters")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise UnsafeUrl("url must be printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl("url is malformed") from exc
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_insecure else ("https",)
    if scheme not in allowed:
        raise UnsafeUrl("url must use https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeUrl("url must not carry credentials")
    if parts.fragment:
        raise UnsafeUrl("url must not have a fragment")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeUrl("url must name a host")
    if port is None:
        port = 443 if scheme == "https" else 80
    ip = _literal(host)
    if ip is not None:
        canonical = str(ip)
        if isinstance(ip, ipaddress.IPv4Address) and host != canonical:
            raise UnsafeUrl("url host must be a name or a canonical IP address")
        if not allow_insecure and is_internal(ip):
            raise UnsafeUrl("url must not point to an internal address")
        return Target(scheme, canonical, port, ip)
    if not allow_insecure and (
        host in _BLOCKED_NAMES or any(host.endswith(s) for s in _BLOCKED_SUFFIXES)
    ):
        raise UnsafeUrl("url must not point to an internal host")
    if "." not in host and not allow_insecure:
        raise UnsafeUrl("url must name a fully qualified host")
    return Target(scheme, host, port, None)


async def system_resolver(host: str, port: int) -> list[str]:
    """Addresses of a host from the system resolver."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    target: Target,
    *,
    allow_insecure: bool = False,
    resolver: Resolver = system_resolver,
) -> IPAddress:
    """The address to connect to; UnsafeUrl when the name does not resolve or when any
    of its addresses is internal (a name with one public and one private address is
    refused as a whole)."""
    if target.ip is not None:
        return target.ip
    try:
        answers = await resolver(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl("url host does not resolve") from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer.split("%", 1)[0]))
        except ValueError as exc:
            raise UnsafeUrl("url host resolves to an invalid address") from exc
    if not addresses:
        raise UnsafeUrl("url host does not resolve")
    if not allow_insecure and any(is_internal(a) for a in addresses):
        raise UnsafeUrl("url host resolves to an internal address")
    return addresses[0]


async def check_endpoint(
    url: str, *, allow_insecure: bool = False, resolver: Resolver = system_resolver
) -> tuple[Target, IPAddress]:
    """`check_url` then `resolve_checked`: what registration and every connect run."""
    target = check_url(url, allow_insecure=allow_insecure)
    return target, await resolve_checked(target, allow_insecure=allow_insecure, resolver=resolver)
