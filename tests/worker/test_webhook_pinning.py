"""A delivery connects to the address its destination check resolved, never to
the name resolved again (DNS rebinding), and TLS still checks the name.

DNS is faked here, at the event loop (which both the check and httpx ask) or at
the check's resolver; the receivers are real servers on loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from factq.errors import InvalidWebhook
from factq.settings import Settings
from factq.state.store import Store
from factq.webhooks.destinations import Address
from factq.webhooks.sender import post_checked
from factq.worker.webhook_delivery import WebhookSender

PUBLIC = "1.1.1.1"
BODY = b'{"type":"job.completed"}'


@dataclass
class Receiver:
    """A bare HTTP/1.1 server on 127.0.0.1 that answers 204 and records what it saw."""

    port: int = 0
    connections: int = 0
    server_names: list[str | None] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def receiving(tls: ssl.SSLContext | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _context: receiver.server_names.append(name)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, ssl=tls)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


@dataclass
class Certificates:
    """A throwaway CA, and a server certificate it signed for `hooks.test` only."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    where = tmp_path_factory.mktemp("tls")

    def openssl(command: str) -> None:
        subprocess.run(["openssl", *command.split()], cwd=where, check=True, capture_output=True)

    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl(
        f"req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=factq-test-ca"
        " -addext keyUsage=critical,keyCertSign,cRLSign"
    )
    openssl(f"req -new {key} -keyout server.key -out server.csr -subj /CN=hooks.test")
    (where / "server.ext").write_text(
        "subjectAltName=DNS:hooks.test\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        " -extfile server.ext -out server.pem"
    )
    return Certificates(where / "ca.pem", where / "server.pem", where / "server.key")


@dataclass
class FakeNetwork:
    """DNS on the running loop, which both the check and httpx ask, for the
    names in `answers`; other names resolve as usual.

    `answers[name]` is what successive lookups of name get, the last one for
    good. Every TCP connect is recorded; those to PUBLIC are refused, so no
    packet leaves the machine.
    """

    answers: dict[str, list[str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    connects: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
async def network(monkeypatch: pytest.MonkeyPatch) -> FakeNetwork:
    fake = FakeNetwork()
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo
    real_create_connection = loop.create_connection

    async def getaddrinfo(host: str | bytes | None, port: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in fake.answers:
            return await real_getaddrinfo(host, port, **kwargs)
        fake.lookups.append(name)
        answers = fake.answers[name]
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    async def create_connection(factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
        fake.connects.append((host, port))
        if host == PUBLIC:
            raise ConnectionRefusedError(f"{PUBLIC} is not really reachable from a test")
        return await real_create_connection(factory, host, port, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(loop, "create_connection", create_connection)
    return fake


def resolving_to(*addresses: str) -> Callable[[str, int], Any]:
    """A stand-in for the destination check's resolver: every name is `addresses`."""

    async def resolve(host: str, port: int) -> list[Address]:
        return [ipaddress.ip_address(address) for address in addresses]

    return resolve


async def post(url: str, allowed: frozenset[str] = frozenset(), **kw: Any) -> httpx.Response:
    options: dict[str, Any] = {"timeout_s": 5.0, "ssl_context": ssl.create_default_context()}
    options.update(kw)
    return await post_checked(url, allowed, content=BODY, headers={"x-test": "1"}, **options)


async def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to(
    network: FakeNetwork,
) -> None:
    async with receiving() as receiver:
        # Public to the check, loopback to any later lookup: DNS rebinding.
        network.answers["rebind.test"] = [PUBLIC, "127.0.0.1"]
        with pytest.raises(httpx.TransportError):
            await post(f"https://rebind.test:{receiver.port}/hook", timeout_s=2.0)
    assert network.connects == [(PUBLIC, receiver.port)]
    assert network.lookups == ["rebind.test"], "resolved once, by the check"
    assert receiver.connections == 0


async def test_a_name_that_resolves_to_loopback_is_refused_before_any_connection(
    network: FakeNetwork,
) -> None:
    network.answers["inside.test"] = ["127.0.0.1"]
    with pytest.raises(InvalidWebhook, match="not a public unicast address"):
        await post("https://inside.test/hook")
    assert network.connects == []


async def test_https_to_the_pinned_address_still_checks_the_certificate_for_the_name(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates
) -> None:
    monkeypatch.setattr("factq.webhooks.destinations._resolve", resolving_to("127.0.0.1"))
    async with receiving(certificates.server_context()) as receiver:
        url = f"https://hooks.test:{receiver.port}/hook"
        response = await post(
            url, frozenset({"hooks.test"}), ssl_context=certificates.client_context()
        )
    assert response.status_code == 204
    assert receiver.server_names == ["hooks.test"]
    [(headers, body)] = receiver.requests
    assert headers["host"] == f"hooks.test:{receiver.port}"
    assert headers["x-test"] == "1"
    assert body == BODY


async def test_a_certificate_for_another_name_is_refused_on_the_pinned_address(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates
) -> None:
    monkeypatch.setattr("factq.webhooks.destinations._resolve", resolving_to("127.0.0.1"))
    async with receiving(certificates.server_context()) as receiver:
        url = f"https://other.test:{receiver.port}/hook"
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            await post(url, frozenset({"other.test"}), ssl_context=certificates.client_context())
    assert receiver.server_names == ["other.test"]
    assert receiver.requests == []


async def test_the_next_checked_address_is_tried_when_one_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on 127.0.0.2: the receiver is bound to 127.0.0.1 only.
    monkeypatch.setattr(
        "factq.webhooks.destinations._resolve", resolving_to("127.0.0.2", "127.0.0.1")
    )
    async with receiving() as receiver:
        response = await post(f"http://twice.test:{receiver.port}/hook", frozenset({"twice.test"}))
    assert response.status_code == 204
    assert [headers["host"] for headers, _ in receiver.requests] == [f"twice.test:{receiver.port}"]


@asynccontextmanager
async def dripping(head: bytes, body_bytes: int) -> AsyncIterator[int]:
    """A receiver that sends `head` a byte every 0.1 s, then a body as slowly: the
    port it listens on."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in [*head, *(b"x" * body_bytes)]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_the_answer_is_the_status_a_body_dripped_out_is_never_waited_for() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    async with dripping(head, 1000) as port:
        started = asyncio.get_running_loop().time()
        response = await post(f"http://127.0.0.1:{port}/hook", frozenset({"127.0.0.1"}))
        assert response.status_code == 200
        # The head takes about 4 s at a byte a tenth; the body would take 100 s more.
        assert asyncio.get_running_loop().time() - started < 30


async def test_an_attempt_is_limited_as_a_whole_when_the_head_drips(
    settings_factory: Callable[..., Settings], store: Store
) -> None:
    """Each byte comes well within the read timeout; the attempt still ends."""
    settings = settings_factory(webhook_timeout_s=1.0, webhook_allowed_hosts="127.0.0.1")
    sender = WebhookSender(store, settings)
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 200 + b"\r\n\r\n"
    async with dripping(head, 0) as port:
        outcome = await sender._attempt(
            ssl.create_default_context(),
            "whsec_" + "A" * 32,
            f"http://127.0.0.1:{port}/h",
            "delivery-1",
            "job.completed",
            {},
        )
    assert outcome == {"error": "no answer within 1 s"}
