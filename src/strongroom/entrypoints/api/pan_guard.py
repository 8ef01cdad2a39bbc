"""The PAN guard: a request that carries a card number is refused before any route sees it, so
the number is never stored, logged or echoed. Plain ASGI, like EdgeMiddleware, for speed; it
sits inside EdgeMiddleware, which has already given the request an id and capped its body.

One exception: the body of `POST /v1/tokens`, the sandbox's tokenization endpoint, which its
hosted card fields post a test card number to (in real life that endpoint is the gateway's).
The exemption is that exact method and path, and the body alone: its path, query string and
headers are still scanned, and so is every other request."""

from __future__ import annotations

import email.message
import functools
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from strongroom.domain.pan import contains_pan
from strongroom.entrypoints.api.middleware import BODY_METHODS, read_body, replay_body, send_error
from strongroom.entrypoints.api.rendering import error_payload

log = structlog.get_logger(__name__)

MESSAGE = (
    "This request appears to contain a card number. Strongroom never accepts card numbers: "
    "tokenize the card in the browser with your gateway (Stripe Elements, Braintree Drop-in or "
    "the sandbox's hosted fields) and send the token as payment_method instead."
)
# A JSON number in exponent form (4.242424242424242e15, 42424242424242420e-1) does not show
# its digits in the raw text. Only a number token counts: not the "8e0" of a hex id.
_EXPONENT = re.compile(r"[0-9][eE][+-]?[0-9]+(?![0-9A-Za-z_.])")
_MANTISSA = frozenset("0123456789.-")
# The escapes a JSON string may hide digits behind, for a body that does not parse.
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# The one route whose body may carry a card number (see the module docstring).
TOKENIZATION_PATH = "/v1/tokens"


class PanGuard:
    """Refuses with 400 `pan_detected` any request whose path, query string, headers or body
    holds a card number (see domain.pan.find_pans). The error's `param` says where, never what."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = find_in_head(scope)
        if where is None and scope["method"] in BODY_METHODS and not _tokenizing(scope):
            # EdgeMiddleware, outside, has read and capped the body: this is its replay.
            body = await read_body(receive) or b""
            receive = replay_body(body)
            where = find_in_body(body, _content_type(scope))
        if where is None:
            await self.app(scope, receive, send)
            return
        request_id = str(scope.get("state", {}).get("request_id", ""))
        log.warning("refused a request carrying a card number", where=where, request_id=request_id)
        await _refuse(send, where, request_id)


def _tokenizing(scope: Scope) -> bool:
    return scope["method"] == "POST" and scope.get("path") == TOKENIZATION_PATH


def find_in_head(scope: Scope) -> str | None:
    """Where a card number sits in the request line or headers ('path', 'query.q',
    'header.x-note'), or None. The common case (none) costs one scan of all of it together."""
    path: str = scope.get("path", "")
    query: bytes = scope.get("query_string", b"")
    values = [value for _, value in scope.get("headers", ())]
    # Joined with NUL, which is not a separator: no number runs from one value into the next.
    if any(map(_holds_pan, _head_decodings(b"\0".join((query, *values))))):
        return _locate_in_head(scope, path, query)
    return "path" if contains_pan(path) else None


def _escaped(text: str) -> bool:
    return "%" in text or "+" in text


def _locate_in_head(scope: Scope, path: str, query: bytes) -> str | None:
    if contains_pan(path):
        return "path"
    if query:
        for text in _head_decodings(query):
            if _holds_pan(text):
                return "query." + _query_param(text)
    for name, value in scope.get("headers", ()):
        if any(map(_holds_pan, _head_decodings(value))):
            header = name.decode("latin-1").lower()
            return "header" if any(map(_holds_pan, _head_decodings(name))) else "header." + header
    return None


def _holds_pan(text: str) -> bool:
    return contains_pan(text) or (_escaped(text) and contains_pan(unquote_plus(text)))


def find_in_body(body: bytes, content_type: str) -> str | None:
    """Where a card number sits in a request body ('metadata.note', 'card', 'body'), or None.

    A body FastAPI parses as JSON (see parsed_as_json) is scanned as FastAPI sees it: decoded
    with json.loads(bytes), which detects UTF-8, UTF-16 and UTF-32, and walked (every string,
    number and key). The raw text is always scanned, decoded as JSON would decode it (and as
    UTF-8 and Latin-1 when not ASCII). JSON is decoded only when the raw text could hide a
    number (escapes, numbers in exponent form); a form only when it holds escapes; and either
    is decoded on a hit, to say where it was."""
    if not body:
        return None
    texts = _decodings(body)
    raw_hit = any(map(contains_pan, texts))
    if parsed_as_json(content_type):
        text = texts[0]
        if raw_hit or "\\" in text or _exponent(text):
            try:
                document = json.loads(body, object_pairs_hook=_Pairs)
            except (ValueError, RecursionError):
                # FastAPI refuses it too (422 json_invalid), but nothing carrying a number
                # gets past the guard: its escapes are decoded by hand.
                return "body" if raw_hit or contains_pan(_unescape(text)) else None
            found = _json_param(document)
            return found if found is not None else ("body" if raw_hit else None)
        return None
    if raw_hit or any("%" in text or "+" in text for text in texts):
        # A form, or anything else that may be read as one: scanned percent-decoded as well.
        found = _form_param(body.decode("utf-8", "replace"))
        if found is not None or not raw_hit:
            return found
    return "body" if raw_hit else None


@functools.lru_cache(maxsize=256)
def parsed_as_json(content_type: str) -> bool:
    """Whether FastAPI parses a body with this Content-Type (lower-cased, '' when absent) as
    JSON: the test in fastapi/routing.py's get_request_handler, made the same way (with
    email.message, which drops parameters and whitespace and falls back to text/plain for a
    malformed type). Without a content type FastAPI parses JSON only when the route is not
    strict_content_type; such a body is scanned as JSON either way. When in doubt, JSON."""
    if not content_type:
        return True
    try:
        message = email.message.Message()
        message["content-type"] = content_type
        if message.get_content_maintype() != "application":
            return False
        subtype = message.get_content_subtype()
    except Exception:  # an unreadable type: scanned as JSON, to be safe
        return True
    return subtype == "json" or subtype.endswith("+json")


def _decodings(raw: bytes) -> list[str]:
    """A body as text, every way it may be read: as json.loads decodes bytes (UTF-8, or UTF-16
    or UTF-32 by its byte order mark or its zero bytes), and, unless plain ASCII, as UTF-8 and
    as Latin-1 too. The first is what JSON parsing sees."""
    if raw.isascii() and b"\0" not in raw[:4]:  # json.detect_encoding reads the first four
        return [raw.decode("ascii")]
    encoding = json.detect_encoding(raw)
    texts = [raw.decode(encoding, "replace")]
    if not encoding.startswith("utf-8"):
        texts.append(raw.decode("utf-8", "replace"))
    texts.append(raw.decode("latin-1"))
    return texts


def _head_decodings(raw: bytes) -> list[str]:
    """A header value or query string as text: as Latin-1 (as Starlette decodes headers) and,
    unless plain ASCII, as UTF-8 (as a client most likely wrote it)."""
    text = raw.decode("latin-1")
    return [text] if raw.isascii() else [text, raw.decode("utf-8", "replace")]


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return chr(int(match.group(1), 16))
        return _SIMPLE_ESCAPES.get(match.group(2), match.group(2))

    return _JSON_ESCAPE.sub(one, text)


def _exponent(text: str) -> bool:
    for match in _EXPONENT.finditer(text):
        at = match.start()
        while at > 0 and text[at - 1] in _MANTISSA:
            at -= 1
        if at == 0 or not (text[at - 1].isalnum() or text[at - 1] in "_+"):
            return True
    return False


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as all of its key-value pairs: a repeated key's earlier values, which
    json.loads would drop, are scanned too."""


def _query_param(query: str) -> str:
    for key, value in parse_qsl(query, keep_blank_values=True):
        if contains_pan(key):
            return "key"
        if contains_pan(value):
            return key
    return "string"


def _form_param(form: str) -> str | None:
    for key, value in parse_qsl(form, keep_blank_values=True):
        if contains_pan(key):
            return "body"
        if contains_pan(value):
            return key
    return "body" if contains_pan(form) else None


def _json_param(document: Any) -> str | None:
    for path in _json_hits(document, ()):
        return ".".join(path) if path else "body"
    return None


def _json_hits(value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Paths to every card number in a decoded JSON document: in string values, in numbers,
    and in object keys (reported as the object holding the key, so the digits stay out)."""
    if isinstance(value, str):
        if contains_pan(value):
            yield path
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        if contains_pan(repr(value)) or (
            isinstance(value, float) and value.is_integer() and contains_pan(str(int(value)))
        ):
            yield path
    elif isinstance(value, _Pairs):
        for key, item in value:
            if contains_pan(key):
                yield path
            else:
                yield from _json_hits(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_hits(item, (*path, str(index)))


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return str(value.decode("latin-1").lower())
    return ""


async def _refuse(send: Send, where: str, request_id: str) -> None:
    body = error_payload(
        "invalid_request_error", "pan_detected", MESSAGE, request_id, param=where
    ).encode()
    await send_error(send, 400, body)
