"""SafeClient over real sockets: refused targets are never connected to, and allowed ones get
exactly what the caller sent, with redirects, timeouts and body caps enforced.

Every test here runs with `connect_log` active: it records each TCP connect that httpcore makes
and refuses (as the OS would, with an OSError) any connect outside loopback, so a regression can
never send traffic off this machine. The rebinding test uses the same hook to stand a local
server in for a public address.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from strongroom.adapters.http import (
    DeliveryError,
    Response,
    SafeClient,
    TargetRefused,
)

PUBLIC = "93.184.215.14"  # a global address; nothing here ever really connects to it


# --- a local HTTP/1.1 server that records what reaches it -------------------------------------


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if values else None


Handler = Callable[["Received", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class LocalServer:
    """Listens on 127.0.0.1; `connections` counts accepted sockets, `requests` parsed requests."""

    handler: Handler
    ssl_context: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    done: list[asyncio.Event] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self.connections += 1
        finished = asyncio.Event()
        self.done.append(finished)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [
                (name, value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            ]
            received = Received(method, target, headers, b"")
            length = int(received.header("content-length") or 0)
            received.body = await reader.readexactly(length)
            self.requests.append(received)
            await self.handler(received, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            finished.set()
            writer.close()


def reply(
    status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> Handler:
    async def handle(_: Received, writer: asyncio.StreamWriter) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return handle


async def never_answer(_: Received, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # cancelled by LocalServer.stop


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[LocalServer]]]:
    servers: list[LocalServer] = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> LocalServer:
        server = LocalServer(handler, ssl_context)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


# --- every TCP connect, observed; nothing leaves loopback --------------------------------------


@dataclass
class ConnectLog:
    attempts: list[tuple[str, int]] = field(default_factory=list)
    # (host, port) -> (host, port): stands a local server in for an address we may not reach.
    stand_ins: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)


@pytest.fixture(autouse=True)
def connect_log(monkeypatch: pytest.MonkeyPatch) -> ConnectLog:
    """httpcore's asyncio backend connects through `anyio.connect_tcp`; wrap it."""
    log = ConnectLog()
    real = anyio.connect_tcp

    async def observed(remote_host: str, remote_port: int, **kwargs: Any) -> Any:
        log.attempts.append((remote_host, remote_port))
        host, port = log.stand_ins.get((remote_host, remote_port), (remote_host, remote_port))
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:  # a name reached the socket layer: it would be resolved again there
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"test guard: no connection to {host} from tests")
        return await real(host, port, **kwargs)

    monkeypatch.setattr(anyio, "connect_tcp", observed)
    return log


@contextmanager
def socket_port() -> Iterator[int]:
    """A loopback port that was free a moment ago: bound here, released on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class ScriptedResolver:
    """Answers from a script, one answer per call (the last repeats); counts calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


# --- refused targets: a clear reason, and no connection -----------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "http://169.254.169.254/",
            "http://169.254.169.254/ resolves to 169.254.169.254, "
            "a link-local address (a cloud metadata service)",
        ),
        ("http://127.1/", "http://127.1/ resolves to 127.0.0.1, a loopback address"),
        ("http://0x7f000001/", "http://0x7f000001/ resolves to 127.0.0.1, a loopback address"),
        (
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:127.0.0.1]/ resolves to ::ffff:127.0.0.1, "
            "an IPv6 form of 127.0.0.1, a loopback address",
        ),
        ("http://0.0.0.0/", "http://0.0.0.0/ resolves to 0.0.0.0, the unspecified address"),
    ],
)
async def test_internal_targets_are_refused_through_the_system_resolver(
    url: str, reason: str, connect_log: ConnectLog
) -> None:
    """The OS resolver reads 127.1 and 0x7f000001 as 127.0.0.1; the check sees what it sees."""
    client = SafeClient()
    with pytest.raises(TargetRefused) as refused:
        await client.post(url, b"{}", {})
    assert refused.value.reason.startswith(reason)
    assert connect_log.attempts == []


async def test_loopback_is_refused_without_allow_loopback_even_with_a_server_there(
    serve: Callable[..., Awaitable[LocalServer]], connect_log: ConnectLog
) -> None:
    server = await serve(reply(200))
    client = SafeClient(allow_loopback=False)
    for url in (
        f"http://127.0.0.1:{server.port}/",
        f"http://127.1:{server.port}/",
        f"http://localhost:{server.port}/",
    ):
        with pytest.raises(TargetRefused, match="a loopback address"):
            await client.post(url, b"{}", {})
    assert connect_log.attempts == []
    assert server.connections == 0


async def test_a_name_resolving_to_a_private_address_is_refused_even_in_development(
    connect_log: ConnectLog,
) -> None:
    resolver = ScriptedResolver(["10.0.0.1"])
    client = SafeClient(resolver=resolver, allow_loopback=True)
    with pytest.raises(TargetRefused) as refused:
        await client.post("https://hooks.merchant.test/stripe", b"{}", {})
    assert refused.value.reason == (
        "https://hooks.merchant.test/stripe resolves to 10.0.0.1, a private address"
    )
    assert resolver.calls == [("hooks.merchant.test", 443)]
    assert connect_log.attempts == []


async def test_a_mixed_public_and_private_answer_is_refused(connect_log: ConnectLog) -> None:
    """All addresses must be public: otherwise a retry or a happy-eyeballs fallback reaches 10/8."""
    client = SafeClient(resolver=ScriptedResolver([PUBLIC, "10.0.0.1"]))
    with pytest.raises(TargetRefused, match=r"resolves to 10\.0\.0\.1, a private address"):
        await client.post("http://mixed.test/", b"{}", {})
    assert connect_log.attempts == []


async def test_a_non_http_scheme_is_refused_before_resolving(connect_log: ConnectLog) -> None:
    resolver = ScriptedResolver([PUBLIC])
    client = SafeClient(resolver=resolver)
    with pytest.raises(TargetRefused, match="uses ftp:; only http and https"):
        await client.post("ftp://files.merchant.test/hook", b"{}", {})
    assert resolver.calls == []
    assert connect_log.attempts == []


async def test_dns_rebinding_cannot_move_the_connection(
    serve: Callable[..., Awaitable[LocalServer]], connect_log: ConnectLog
) -> None:
    """The resolver answers a public address once, then 127.0.0.1 (which allow_loopback would
    even permit, and where a server waits). The client resolves once and connects to the
    address it checked: if anything below it resolved the name again, `rebound` would see the
    request. A local server stands in for the public address via the connect hook."""
    public_stand_in = await serve(reply(204))
    rebound = await serve(reply(200))
    port = rebound.port  # the URL's port: the rebound answer would land on this server
    connect_log.stand_ins[(PUBLIC, port)] = ("127.0.0.1", public_stand_in.port)
    resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])
    client = SafeClient(resolver=resolver, allow_loopback=True)

    response = await client.post(f"http://rebind.test:{port}/hook", b"{}", {})

    assert response.status == 204
    assert resolver.calls == [("rebind.test", port)]
    assert connect_log.attempts == [(PUBLIC, port)]
    assert rebound.connections == 0
    [request] = public_stand_in.requests
    assert request.header("host") == f"rebind.test:{port}"
    assert request.target == "/hook"


# --- allowed targets: exact delivery, no redirects, caps and timeouts ---------------------------


async def test_allow_loopback_reaches_a_local_server_with_the_exact_body_and_headers(
    serve: Callable[..., Awaitable[LocalServer]], connect_log: ConnectLog
) -> None:
    server = await serve(
        reply(200, [("Content-Type", "text/plain"), ("X-Seen", "a"), ("x-seen", "b")], b"ok")
    )
    body = b'{"id":"evt_1","type":"payment_intent.succeeded"}'
    headers = {
        "Content-Type": "application/json",
        "webhook-id": "msg_1",
        "webhook-signature": "v1,abc=",
        "User-Agent": "Strongroom-Test",
        "Host": "evil.test",  # ignored: Host always names the URL's host
    }
    client = SafeClient(allow_loopback=True)

    response = await client.post(f"http://127.0.0.1:{server.port}/hooks?x=1", body, headers)

    assert response == Response(
        200,
        {"content-type": "text/plain", "x-seen": "a, b", "content-length": "2",
         "connection": "close"},
        b"ok",
    )  # fmt: skip
    [request] = server.requests
    assert (request.method, request.target, request.body) == ("POST", "/hooks?x=1", body)
    for name, value in headers.items():
        if name != "Host":
            assert [v for k, v in request.headers if k.lower() == name.lower()] == [value]
    assert [v for k, v in request.headers if k.lower() == "host"] == [f"127.0.0.1:{server.port}"]
    assert request.header("content-length") == str(len(body))
    assert connect_log.attempts == [("127.0.0.1", server.port)]


async def test_a_redirect_to_loopback_is_returned_not_followed(
    serve: Callable[..., Awaitable[LocalServer]],
) -> None:
    other = await serve(reply(200))
    location = f"http://127.0.0.1:{other.port}/"
    redirecting = await serve(reply(302, [("Location", location)]))
    client = SafeClient(allow_loopback=True)

    response = await client.post(f"http://127.0.0.1:{redirecting.port}/", b"{}", {})

    assert response.status == 302
    assert response.headers["location"] == location
    assert len(redirecting.requests) == 1
    assert other.connections == 0


async def test_a_body_larger_than_the_cap_is_truncated_and_not_read_to_the_end(
    serve: Callable[..., Awaitable[LocalServer]],
) -> None:
    chunk = bytes(range(256)) * 2048  # 512 KiB
    total = 64 * len(chunk)  # 32 MiB: more than any socket buffer holds
    sent_all: list[bool] = []

    async def flood(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        for _ in range(64):
            writer.write(chunk)
            await writer.drain()
        sent_all.append(True)

    server = await serve(flood)
    client = SafeClient(allow_loopback=True, max_response_bytes=1000)

    response = await client.post(f"http://127.0.0.1:{server.port}/", b"{}", {})

    assert response.status == 200
    assert response.body == chunk[:1000]
    async with asyncio.timeout(10):
        await server.done[0].wait()  # the server saw the connection dropped mid-body
    assert sent_all == []


async def test_a_server_that_never_answers_hits_the_read_timeout(
    serve: Callable[..., Awaitable[LocalServer]],
) -> None:
    server = await serve(never_answer)
    client = SafeClient(allow_loopback=True, read_timeout=0.2)
    url = f"http://127.0.0.1:{server.port}/"
    with pytest.raises(DeliveryError) as failed:
        await client.post(url, b"{}", {})
    assert failed.value.reason == f"{url} sent nothing for 0.2 s (read timeout)"
    assert len(server.requests) == 1  # it connected and sent: the read is what timed out


async def test_the_total_timeout_bounds_the_whole_exchange(
    serve: Callable[..., Awaitable[LocalServer]],
) -> None:
    """A receiver trickling bytes inside every read timeout is stopped by the same deadline; a
    silent one with a long read timeout shows it without pacing a server by the clock."""
    server = await serve(never_answer)
    client = SafeClient(allow_loopback=True, read_timeout=30, total_timeout=0.2)
    with pytest.raises(DeliveryError, match=r"did not finish within 0\.2 s"):
        await client.post(f"http://127.0.0.1:{server.port}/", b"{}", {})
    assert len(server.requests) == 1


async def test_a_refused_connection_is_a_delivery_error(connect_log: ConnectLog) -> None:
    with socket_port() as port:
        pass  # closed again: nothing listens there now
    client = SafeClient(allow_loopback=True)
    with pytest.raises(DeliveryError, match=r"could not be reached: could not connect to 127"):
        await client.post(f"http://127.0.0.1:{port}/", b"{}", {})
    assert connect_log.attempts == [("127.0.0.1", port)]


async def test_later_checked_addresses_are_tried_when_the_first_refuses(
    serve: Callable[..., Awaitable[LocalServer]], connect_log: ConnectLog
) -> None:
    """`localhost` often answers ::1 first while a dev server listens on 127.0.0.1 only."""
    server = await serve(reply(200))
    with socket_port() as dead:
        pass
    connect_log.stand_ins[("127.0.0.2", server.port)] = ("127.0.0.1", dead)
    resolver = ScriptedResolver(["127.0.0.2", "127.0.0.1"])
    client = SafeClient(resolver=resolver, allow_loopback=True)
    response = await client.post(f"http://dev.test:{server.port}/", b"{}", {})
    assert response.status == 200
    assert connect_log.attempts == [("127.0.0.2", server.port), ("127.0.0.1", server.port)]
    assert server.requests[0].header("host") == f"dev.test:{server.port}"


# --- https: SNI and certificate checked against the URL's name, not the IP -----------------------


class TestCA:
    __test__ = False

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Strongroom test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(
            cadata=self.cert.public_bytes(serialization.Encoding.PEM).decode()
        )

    def server_context(
        self, names: list[x509.GeneralName], tmp: Path, seen_sni: list[str | None]
    ) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        (tmp / "leaf.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "leaf.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")

        def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            seen_sni.append(name)

        context.sni_callback = record_sni
        return context


async def test_https_sends_the_url_name_as_sni_and_verifies_the_certificate_for_it(
    serve: Callable[..., Awaitable[LocalServer]], connect_log: ConnectLog, tmp_path: Path
) -> None:
    ca = TestCA()
    seen_sni: list[str | None] = []
    server_ctx = ca.server_context([x509.DNSName("merchant.test")], tmp_path, seen_sni)
    server = await serve(reply(200, body=b"tls ok"), server_ctx)
    client = SafeClient(
        resolver=ScriptedResolver(["127.0.0.1"]),
        allow_loopback=True,
        ssl_context=ca.client_context(),
    )

    response = await client.post(f"https://merchant.test:{server.port}/hook", b"{}", {})

    assert (response.status, response.body) == (200, b"tls ok")
    assert seen_sni == ["merchant.test"]
    assert server.requests[0].header("host") == f"merchant.test:{server.port}"
    assert connect_log.attempts == [("127.0.0.1", server.port)]


async def test_https_refuses_a_certificate_valid_only_for_the_connected_ip(
    serve: Callable[..., Awaitable[LocalServer]], tmp_path: Path
) -> None:
    """Had the client verified against the IP it connects to, this certificate would pass."""
    ca = TestCA()
    ip_only = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = await serve(reply(200), ca.server_context(ip_only, tmp_path, []))
    client = SafeClient(
        resolver=ScriptedResolver(["127.0.0.1"]),
        allow_loopback=True,
        ssl_context=ca.client_context(),
    )
    with pytest.raises(DeliveryError) as failed:
        await client.post(f"https://merchant.test:{server.port}/hook", b"{}", {})
    assert "TLS with 127.0.0.1 failed for merchant.test: CERTIFICATE_VERIFY_FAILED" in (
        failed.value.reason
    )
    assert server.requests == []


async def test_a_closed_client_refuses_to_post() -> None:
    client = SafeClient()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.post("https://merchant.test/", b"{}", {})
