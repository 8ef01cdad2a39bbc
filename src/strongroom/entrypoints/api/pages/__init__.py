"""Browser pages served by the API (the sandbox's hosted card fields, the demo checkout): their
markup and scripts are string constants in these modules, so they ship with the code; every
script and style is inline and allowed by its hash in the page's Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import urlsplit

__all__ = ["csp_hash", "host_of", "origin_of", "parse_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# An origin as a browser serializes it: scheme, host (a name, an IPv4 address or a bracketed
# IPv6 address) and a port unless it is the scheme's default. Nothing else can appear, so it
# is safe inside a CSP header and a postMessage target.
_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")


def csp_hash(source: str) -> str:
    """The CSP source expression allowing exactly this inline script or style."""
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def parse_origin(text: str) -> str | None:
    """`text` as a browser would write the origin (lower case, default port dropped), or None
    when it is not exactly an http(s) origin (a path, user info, anything else)."""
    match = _ORIGIN.fullmatch(text.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.groups()
    if port is None:
        return f"{scheme}://{host}"
    number = int(port)
    if not 0 < number < 65536:
        return None
    return f"{scheme}://{host}" + ("" if number == _DEFAULT_PORTS[scheme] else f":{number}")


def origin_of(base_url: str) -> str:
    """The origin of a configured base URL (public_url, tokenization_url)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:  # urlsplit drops an IPv6 address's brackets
        host = f"[{host}]"
    origin = parse_origin(f"{parts.scheme}://{host}" + _port(parts.port))
    if origin is None:
        raise ValueError(f"not an http(s) base URL: {base_url!r}")
    return origin


def host_of(origin: str) -> str:
    """The Host header a browser sends to an origin (what follows the scheme)."""
    return origin.split("://", 1)[1]


def _port(port: int | None) -> str:
    return f":{port}" if port is not None else ""
