"""Where webhook deliveries may go: public unicast addresses over https, unless
the host is allowed, checked at submission and again (pinned) before each
delivery."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from factq.errors import InvalidWebhook

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

RESOLVE_TIMEOUT_S = 5.0
# The deprecated 6to4 relay anycast range: routable, but no one host.
SIXTOFOUR_RELAYS = ipaddress.ip_network("192.88.99.0/24")


def allowed_hosts(setting: str) -> frozenset[str]:
    return frozenset(host.strip().lower() for host in setting.split(",") if host.strip())


async def check_destination(url: str, allowed: frozenset[str]) -> None:
    """Refuse a URL that is not https, or that resolves to anything but a public
    unicast address (private, loopback, link-local, multicast, broadcast,
    reserved, documentation ranges), unless its host is allowed.

    Checked at submission, and again before each delivery (see
    `destination_addresses`), since a name may resolve elsewhere later.
    """
    await _destination(url, allowed, resolve_allowed=False)


async def destination_addresses(url: str, allowed: frozenset[str]) -> list[Address]:
    """Check url as `check_destination` does, and return the addresses a delivery
    to it may connect to: those just checked (an allowed host's, unchecked).

    A delivery connects to one of these, never to the name resolved again: a
    DNS server may answer a public address to the check and a loopback one to
    the connection a moment later (DNS rebinding).
    """
    return await _destination(url, allowed, resolve_allowed=True)


async def _destination(
    url: str, allowed: frozenset[str], *, resolve_allowed: bool
) -> list[Address]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidWebhook(f"webhook url must be an absolute https URL, not {url[:100]!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidWebhook(f"webhook url has an invalid port: {url[:100]!r}") from None
    if host in allowed:
        # Trusted whatever it resolves to: only a delivery, which connects to
        # the address, needs it resolved.
        return await _resolve(host, port) if resolve_allowed else []
    if parts.scheme != "https":
        raise InvalidWebhook(
            "webhook url must use https (or its host be in FACTQ_WEBHOOK_ALLOWED_HOSTS)"
        )
    addresses = await _resolve(host, port)
    for address in addresses:
        if not is_public_unicast(address):
            raise InvalidWebhook(
                f"webhook host {host} resolves to {address}, which is not a public unicast address"
            )
    return addresses


def is_public_unicast(address: Address) -> bool:
    """A destination a webhook may reach: globally routable and one host. Python's
    `is_global` also says yes to multicast, and an IPv4-mapped IPv6 address is
    judged by the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside (mapped, or 6to4's) is judged as itself.
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return is_public_unicast(inner)
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address in SIXTOFOUR_RELAYS
    )


async def _resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        raise InvalidWebhook(f"webhook host {host} cannot be resolved") from exc
    # In the resolver's order, once each.
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise InvalidWebhook(f"webhook host {host} cannot be resolved")
    return addresses
