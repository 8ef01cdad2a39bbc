"""The outbound HTTP client for merchant-supplied URLs, built so a URL cannot aim it at us (SSRF).

Exceptions::

    Exception
     └── SafeClientError        .reason: one sentence, safe to show the merchant and to log
          ├── TargetRefused     refused before any byte was sent (scheme, userinfo, address)
          └── DeliveryError     sent or tried, and failed (resolution, connect, TLS, timeout, ...)

How a target is pinned (the choice the issue asked us to explain): we resolve the host ourselves,
once per `post`, refuse unless every address is public, then hand httpx's *transport* (not its
client) a request whose URL host is the checked IP, with the original `Host` header and, for
https, the `sni_hostname` extension, so TLS sends the merchant's name and verifies the
certificate against it (httpcore passes it to `SSLContext.wrap_socket(server_hostname=...)`).
Nothing below us resolves the name again, so a DNS answer that changes between the check and the
connect (rebinding) cannot move the connection. We use the transport directly because it has no
redirect logic and reads no proxy or netrc settings from the environment (an `HTTPS_PROXY` would
otherwise send the request to a proxy that resolves the name on its own). aiohttp with a pinned
resolver would also work; httpx is already a dependency and its seam is smaller.

Each attempt gets its own transport (one connection, no keep-alive): a pooled connection is keyed
by IP and port only, so reusing one opened with another merchant's SNI would skip certificate
verification for this hostname.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, cast

import httpx

__all__ = [
    "DeliveryError",
    "Resolver",
    "Response",
    "SafeClient",
    "SafeClientError",
    "SystemResolver",
    "Target",
    "TargetRefused",
    "check_url",
    "classify_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK = "a loopback address"
# The RFC 1918 ranges and IPv6 unique-local: `ipaddress.is_private` also covers documentation and
# benchmarking ranges, which we name separately so the reason a merchant reads is accurate.
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254"))
# We set these ourselves: a caller's Host would undo the pinning, and a stale length or
# transfer-encoding would let a body smuggle a second request.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class SafeClientError(Exception):
    """Base of the client's errors; `reason` is a sentence fit for a delivery log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TargetRefused(SafeClientError):
    """The URL or one of its addresses is not allowed; nothing was sent."""


class DeliveryError(SafeClientError):
    """The target was allowed but the exchange failed (timeout, refused, TLS, protocol)."""


class Resolver(Protocol):
    """Turns a host name into every address it has (A and AAAA), as IP strings."""

    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The operating system's resolver, so numeric forms (127.1, 0x7f000001) mean what the OS
    says they mean: checking the same answers the socket layer would use is the point."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Response:
    """What the receiver answered; a 3xx is returned as is, never followed."""

    status: int
    headers: Mapping[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes  # at most max_response_bytes; the rest was never read


@dataclass(frozen=True)
class Target:
    """A URL whose every address was checked, and the addresses a delivery may connect to."""

    url: str  # normalized by check_url
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    addresses: tuple[str, ...]  # checked, in resolver order; IPv4-mapped ones unwrapped


def check_url(url: str) -> str:
    """The normalized form of a webhook URL, or TargetRefused if it can never be delivered to.

    Refuses a scheme other than http/https, a missing host, credentials in the URL (they would
    be sent to whoever the host is, and `user@host` is a classic way to disguise the real host)
    and port 0. Normalizing drops a default port and the fragment (never sent over HTTP).
    Does no I/O: addresses are checked on every delivery, when they are resolved.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise TargetRefused(f"{url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in _SCHEMES:
        shown = f"{parsed.scheme}:" if parsed.scheme else "no scheme"
        raise TargetRefused(f"{url} uses {shown}; only http and https URLs are allowed")
    if not parsed.raw_host:
        raise TargetRefused(f"{url} has no host")
    if parsed.userinfo:
        # The URL is not echoed: its userinfo may be a password, and reasons get logged.
        raise TargetRefused(
            f"the {parsed.scheme} URL for {parsed.raw_host.decode('ascii')} contains a user name "
            "or password; send credentials in a header instead"
        )
    if parsed.port == 0:
        raise TargetRefused(f"{url} uses port 0")
    port = None if parsed.port == _DEFAULT_PORTS[parsed.scheme] else parsed.port
    return str(parsed.copy_with(port=port, fragment=None, path=parsed.path or "/"))


def _kind(ip: IPAddress) -> str | None:
    """Why this address, taken on its own, is not a public one; None when it is."""
    if ip.is_unspecified:
        return "the unspecified address, which reaches this machine"
    if ip.is_loopback:
        return _LOOPBACK
    if ip.is_link_local:
        return "a link-local address"
    if ip in _THIS_NETWORK:
        return "a 'this network' address (0.0.0.0/8)"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if any(ip in net for net in _PRIVATE):
        return "a private address"
    # ipaddress calls most multicast "global", so it must be asked for by name.
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a special-purpose address that is not globally reachable"
    return None


def _described(ip: IPAddress) -> str | None:
    kind = _kind(ip)
    if kind is not None and ip in _METADATA:
        return f"{kind} (a cloud metadata service)"
    return kind


def _refusal(ip: IPAddress, *, allow_loopback: bool) -> str | None:
    kind = _described(ip)
    return None if kind == _LOOPBACK and allow_loopback else kind


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses that traffic to this IPv6 address would end up at, with the form's name
    (article included, for the reason sentence)."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if ip.sixtofour is not None:
        found.append(("a 6to4", ip.sixtofour))
    if ip.teredo is not None:
        server, client = ip.teredo
        found += [("a Teredo", server), ("a Teredo", client)]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are not embedded forms
        found.append(("an IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return found


def _vet(address: str, *, allow_loopback: bool) -> tuple[str, str | None]:
    """(the address to connect to, why it is refused or None)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address, "which is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            # The kernel sends ::ffff:a.b.c.d to a.b.c.d: judge, and connect to, the IPv4 host.
            why = _refusal(mapped, allow_loopback=allow_loopback)
            return str(mapped), None if why is None else f"an IPv6 form of {mapped}, {why}"
        if ip in _NAT64:
            # A NAT64 gateway forwards these to the embedded IPv4 address; only that one counts.
            v4 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            why = _described(v4)
            return str(ip), None if why is None else f"a NAT64 form of {v4}, {why}"
        for form, v4 in _embedded_ipv4(ip):
            # Tunnels never get the loopback exception: it is for a developer's own machine.
            why = _described(v4)
            if why is not None:
                return str(ip), f"{form} address for {v4}, {why}"
    return str(ip), _refusal(ip, allow_loopback=allow_loopback)


def classify_address(address: str, *, allow_loopback: bool = False) -> str | None:
    """None when a delivery may connect to `address`, else why not (e.g. "a private address").

    IPv4-mapped, NAT64, 6to4, Teredo and IPv4-compatible IPv6 forms are judged by the IPv4
    address inside them too. Loopback passes only with allow_loopback; nothing else non-global
    ever does.
    """
    return _vet(address, allow_loopback=allow_loopback)[1]


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _Unreachable(Exception):
    """A connect-phase failure on one address: nothing of the request was sent, try the next."""


class SafeClient:
    """POSTs to merchant URLs, connecting only to checked public addresses (see module doc).

    Timeouts: `connect_timeout` bounds resolution and each connection attempt, `read_timeout`
    each wait for bytes from the receiver, and `total_timeout` (default connect + read) the whole
    exchange after resolution, so a receiver trickling a byte at a time cannot hold a worker.
    `ssl_context` replaces the default trust store (certifi); tests pass one trusting a test CA.
    """

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        allow_loopback: bool = False,
        connect_timeout: float = 5,
        read_timeout: float = 10,
        max_response_bytes: int = 65536,
        total_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "Strongroom-Webhooks/1",
    ) -> None:
        if (
            connect_timeout <= 0
            or read_timeout <= 0
            or (total_timeout is not None and total_timeout <= 0)
        ):
            raise ValueError("timeouts must be positive")
        if max_response_bytes < 0:
            raise ValueError("max_response_bytes cannot be negative")
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self._allow_loopback = allow_loopback
        self._connect_timeout = float(connect_timeout)
        self._read_timeout = float(read_timeout)
        self._total_timeout = (
            float(total_timeout) if total_timeout is not None else connect_timeout + read_timeout
        )
        self._max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._user_agent = user_agent
        self._closed = False

    async def check(self, url: str) -> Target:
        """Normalize, resolve once and vet every address; TargetRefused or DeliveryError if not.

        DeliveryError covers a name that does not resolve (now): that may change, a refusal not.
        """
        normalized = check_url(url)
        parsed = httpx.URL(normalized)
        scheme = parsed.scheme
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or _DEFAULT_PORTS[scheme]
        try:
            ipaddress.ip_address(host)
            answers = [host]  # an IP literal: nothing to resolve
        except ValueError:
            answers = await self._resolve(host, port)
        addresses: list[str] = []
        for answer in answers:
            connect_to, why = _vet(answer, allow_loopback=self._allow_loopback)
            if why is not None:
                raise TargetRefused(f"{normalized} resolves to {answer}, {why}")
            addresses.append(connect_to)
        return Target(normalized, scheme, host, port, tuple(dict.fromkeys(addresses)))

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            async with asyncio.timeout(self._connect_timeout):
                answers = await self._resolver.resolve(host, port)
        except TimeoutError:
            raise DeliveryError(
                f"resolving {host} took longer than {self._connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise DeliveryError(f"{host} could not be resolved: {exc}") from None
        if not answers:
            raise DeliveryError(f"{host} has no addresses")
        return answers

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST `body` with `headers` to `url`, resolved and vetted afresh for this call.

        Tries the checked addresses in order until one accepts the connection (nothing is sent
        to one that does not). Raises TargetRefused or DeliveryError; a 3xx is a Response.
        """
        if self._closed:
            raise RuntimeError("SafeClient is closed")
        target = await self.check(url)
        failures: list[str] = []
        try:
            async with asyncio.timeout(self._total_timeout):
                for address in target.addresses:
                    try:
                        return await self._exchange(target, address, body, headers)
                    except _Unreachable as exc:
                        failures.append(str(exc))
        except TimeoutError:
            raise DeliveryError(
                f"{target.url} did not finish within {self._total_timeout:g} s"
            ) from None
        raise DeliveryError(f"{target.url} could not be reached: " + "; ".join(failures))

    def _request(
        self, target: Target, address: str, body: bytes, headers: Mapping[str, str]
    ) -> httpx.Request:
        # Keyed by lower-cased name so a caller's User-Agent replaces ours instead of doubling it.
        chosen = {
            "user-agent": ("User-Agent", self._user_agent),
            # Raw bytes are what we keep; asking for no compression keeps them readable.
            "accept-encoding": ("Accept-Encoding", "identity"),
        }
        for name, value in headers.items():
            if name.lower() not in _RESERVED_HEADERS:
                chosen[name.lower()] = (name, value)
        url = httpx.URL(target.url)
        pairs = [*chosen.values(), ("Host", url.netloc.decode("ascii"))]
        extensions: dict[str, object] = {
            "timeout": {
                "connect": self._connect_timeout,
                "read": self._read_timeout,
                "write": self._read_timeout,
                "pool": self._connect_timeout,
            }
        }
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
        return httpx.Request(
            "POST",
            url.copy_with(host=address),
            headers=pairs,
            content=body,
            extensions=extensions,
        )

    async def _exchange(
        self, target: Target, address: str, body: bytes, headers: Mapping[str, str]
    ) -> Response:
        request = self._request(target, address, body, headers)
        transport = httpx.AsyncHTTPTransport(
            verify=self._ssl_context,
            trust_env=False,
            retries=0,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
        )
        async with transport:
            try:
                response = await transport.handle_async_request(request)
            except httpx.ConnectTimeout:
                raise _Unreachable(
                    f"connecting to {address} timed out after {self._connect_timeout:g} s"
                ) from None
            except httpx.ConnectError as exc:
                tls = _tls_failure(exc)
                if tls is not None:
                    detail = getattr(tls, "verify_message", None) or ""
                    raise _Unreachable(
                        f"TLS with {address} failed for {target.host}: {tls.reason or tls}"
                        + (f" ({detail})" if detail else "")
                    ) from None
                raise _Unreachable(f"could not connect to {address}: {exc}") from None
            except httpx.TransportError as exc:
                raise self._failure(target, exc) from None
            try:
                content = await self._read_capped(response)
            except httpx.TransportError as exc:
                raise self._failure(target, exc) from None
            finally:
                await response.aclose()
        received: dict[str, str] = {}
        for name, value in response.headers.multi_items():
            key = name.lower()
            received[key] = f"{received[key]}, {value}" if key in received else value
        return Response(response.status_code, MappingProxyType(received), content)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """Read at most max_response_bytes; closing early drops the connection, unread."""
        cap = self._max_response_bytes
        chunks: list[bytes] = []
        size = 0
        if cap == 0:
            return b""
        # aiter_raw: no decompression, so a small gzip body cannot expand past the cap.
        # aclosing: breaking out early must close the generator now, not when it is collected.
        raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
        async with aclosing(raw) as stream:
            async for chunk in stream:
                piece = chunk[: cap - size]
                chunks.append(piece)
                size += len(piece)
                if size >= cap:
                    break
        return b"".join(chunks)

    def _failure(self, target: Target, exc: httpx.TransportError) -> DeliveryError:
        if isinstance(exc, httpx.ReadTimeout):
            return DeliveryError(
                f"{target.url} sent nothing for {self._read_timeout:g} s (read timeout)"
            )
        if isinstance(exc, httpx.WriteTimeout):
            return DeliveryError(
                f"{target.url} did not accept the request body within {self._read_timeout:g} s"
            )
        if isinstance(exc, httpx.RemoteProtocolError):
            return DeliveryError(f"{target.url} broke the HTTP protocol: {exc}")
        return DeliveryError(f"delivery to {target.url} failed: {type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Refuse further posts. Connections are per attempt, so there is no pool to drain."""
        self._closed = True
