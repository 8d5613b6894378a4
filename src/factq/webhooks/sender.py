"""Sending one delivery to a checked destination, never to an address the check
did not see."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import httpx

from factq.webhooks.destinations import destination_addresses


async def post_checked(
    url: str,
    allowed: frozenset[str],
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    ssl_context: ssl.SSLContext,
) -> httpx.Response:
    """POST to url once its destination is checked, connecting only to an
    address the check allowed.

    httpx would resolve the host again to connect, and get another answer
    from a hostile DNS server (DNS rebinding). So the request goes to a checked
    address itself, while its Host header, TLS server name (SNI) and certificate
    check keep the URL's host. Redirects are never followed: a receiver could
    bounce a delivery to an address the check refused.
    """
    addresses = await destination_addresses(url, allowed)
    target = httpx.URL(url)
    headers = {**headers, "host": target.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.raw_host.decode("ascii")}
    unreachable: httpx.TransportError | None = None
    for address in addresses:
        # A client per connection: a pool is keyed by the address it connects
        # to, so a shared one could carry one host's delivery over a connection
        # whose certificate was checked for another host on that address. And
        # no proxy from the environment: its tunnel would check the certificate
        # against the address, not the host.
        async with httpx.AsyncClient(
            verify=ssl_context, follow_redirects=False, timeout=timeout_s, trust_env=False
        ) as http:
            request = http.build_request(
                "POST",
                target.copy_with(host=str(address)),
                content=content,
                headers=headers,
                extensions=extensions,
            )
            try:
                # The status is the answer: the body is never read, so a
                # receiver that drips one out cannot hold a delivery slot.
                response = await http.send(request, stream=True)
                await response.aclose()
                return response
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: the host's next address may answer.
                unreachable = exc
    assert unreachable is not None, "a resolved host has an address"
    raise unreachable
