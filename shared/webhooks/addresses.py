"""Where a webhook may be sent: the guard against requests to our own networks (SSRF).

A URL's host is resolved and every address it resolves to must be public: not private,
loopback, link-local, multicast, reserved, unspecified or shared (CGNAT), IPv4 inside IPv6
included. The sender then connects to the address that was checked, never resolving the name
again (a second lookup could answer differently: DNS rebinding). Only
WEBHOOK_ALLOW_PRIVATE_NETWORKS lifts the rule (tests, `make run`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048


class UnsafeUrl(Exception):
    """The URL may not receive webhooks: malformed, unresolvable, or a non-public address."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Target:
    """A URL's parts and the address it resolved to, checked."""

    scheme: str
    host: str
    port: int
    address: IPAddress


def parse_url(url: str) -> SplitResult:
    """The URL split, or UnsafeUrl when it is not an absolute http(s) URL we may store."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl("invalid_url", f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeUrl("invalid_url", "the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl("invalid_url", f"the URL is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("invalid_url", "the URL must be http:// or https://")
    if not parts.hostname:
        raise UnsafeUrl("invalid_url", "the URL has no host")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL would be shown back in every listing.
        raise UnsafeUrl("invalid_url", "the URL may not carry credentials")
    if parts.fragment:
        raise UnsafeUrl("invalid_url", "the URL may not have a fragment")
    if port == 0:
        raise UnsafeUrl("invalid_url", "the URL's port must be 1 to 65535")
    return parts


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (is_global excludes private, loopback,
    link-local, reserved, unspecified, shared and documentation ranges)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = (
            address.ipv4_mapped
            or address.sixtofour
            or (address.teredo[1] if address.teredo else None)
        )
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not address.is_multicast


def _default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _checked(parts: SplitResult, addresses: list[IPAddress], allow_private: bool) -> Target:
    if not addresses:
        raise UnsafeUrl("unresolvable_url", f"{parts.hostname} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise UnsafeUrl(
                    "forbidden_address",
                    f"{parts.hostname} resolves to {address}, which is not a public address",
                )
    assert parts.hostname is not None
    return Target(parts.scheme, parts.hostname, _default_port(parts), addresses[0])


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _addresses(
    infos: Sequence[tuple[object, object, object, object, tuple[object, ...]]],
) -> list[IPAddress]:
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


# Registration resolves on a few threads of its own, so that a lookup that hangs costs the API
# a bounded wait and at most these threads, never its request threads for long.
_lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def resolve(url: str, *, allow_private: bool, timeout: float) -> Target:
    """Check a URL for registration: parse, resolve (at most `timeout` seconds), check."""
    parts = parse_url(url)
    assert parts.hostname is not None
    literal = _literal(parts.hostname)
    if literal is not None:
        return _checked(parts, [literal], allow_private)
    future = _lookups.submit(
        socket.getaddrinfo, parts.hostname, _default_port(parts), type=socket.SOCK_STREAM
    )
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout as exc:
        raise UnsafeUrl("unresolvable_url", f"{parts.hostname} did not resolve in time") from exc
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl("unresolvable_url", f"{parts.hostname} does not resolve: {exc}") from exc
    return _checked(parts, _addresses(infos), allow_private)


async def resolve_async(url: str, *, allow_private: bool) -> Target:
    """Check a URL for delivery, on the running event loop (the caller bounds the time)."""
    parts = parse_url(url)
    assert parts.hostname is not None
    literal = _literal(parts.hostname)
    if literal is not None:
        return _checked(parts, [literal], allow_private)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            parts.hostname, _default_port(parts), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl("unresolvable_url", f"{parts.hostname} does not resolve: {exc}") from exc
    return _checked(parts, _addresses(infos), allow_private)
