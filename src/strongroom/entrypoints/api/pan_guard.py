"""The PAN guard: a request that carries a card number is refused before any route sees it, so
the number is never stored, logged or echoed. Plain ASGI, like EdgeMiddleware, for speed; it
sits inside EdgeMiddleware, which has already given the request an id and capped its body."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.domain.pan import contains_pan
from strongroom.entrypoints.api.rendering import error_payload

log = structlog.get_logger(__name__)

MESSAGE = (
    "This request appears to contain a card number. Strongroom never accepts card numbers: "
    "tokenize the card in the browser with your gateway (Stripe Elements, Braintree Drop-in or "
    "the sandbox's hosted fields) and send the token as payment_method instead."
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FORM = "application/x-www-form-urlencoded"
# A JSON number in exponent form (4.242424242424242e15) does not show its digits in the raw
# text. A card number's exponent is 12 to 18, so substring tests rule most bodies out first.
_EXPONENT = re.compile(r"[0-9][eE]\+?1[0-9]")


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
        if where is None and scope["method"] in _BODY_METHODS:
            body = await _read(receive)
            receive = _replay(body)
            where = find_in_body(body, _content_type(scope))
        if where is None:
            await self.app(scope, receive, send)
            return
        request_id = str(scope.get("state", {}).get("request_id", ""))
        log.warning("refused a request carrying a card number", where=where, request_id=request_id)
        await _refuse(send, where, request_id)


def find_in_head(scope: Scope) -> str | None:
    """Where a card number sits in the request line or headers ('path', 'query.q',
    'header.x-note'), or None. The common case (none) costs one scan of all of it together."""
    path: str = scope.get("path", "")
    query: bytes = scope.get("query_string", b"")
    values = [value for _, value in scope.get("headers", ())]
    everything = b"\n".join((query, *values)).decode("latin-1")
    if contains_pan(everything) or (
        _escaped(everything) and contains_pan(unquote_plus(everything))
    ):
        return _locate_in_head(scope, path, query)
    return "path" if contains_pan(path) else None


def _escaped(text: str) -> bool:
    return "%" in text or "+" in text


def _locate_in_head(scope: Scope, path: str, query: bytes) -> str | None:
    if contains_pan(path):
        return "path"
    if query:
        text = query.decode("latin-1")
        if contains_pan(text) or (_escaped(text) and contains_pan(unquote_plus(text))):
            return "query." + _query_param(text)
    for name, value in scope.get("headers", ()):
        text = value.decode("latin-1")
        if contains_pan(text) or (_escaped(text) and contains_pan(unquote_plus(text))):
            header = name.decode("latin-1").lower()
            return "header" if contains_pan(header) else "header." + header
    return None


def find_in_body(body: bytes, content_type: str) -> str | None:
    """Where a card number sits in a request body ('metadata.note', 'card', 'body'), or None.

    The raw text is always scanned. JSON is decoded only when the raw text could hide a number
    (escapes, or numbers in exponent form); a form only when it holds escapes; and either is
    decoded on a hit, to say where it was."""
    if not body:
        return None
    text = body.decode("latin-1")
    raw_hit = contains_pan(text)
    if content_type.startswith(_FORM):
        if raw_hit or "%" in text or "+" in text:
            return _form_param(body.decode("utf-8", "replace"))
        return None
    # FastAPI reads a body without a content type as JSON, so that is scanned as JSON too.
    if not content_type or content_type.startswith("application/json") or "+json" in content_type:
        if raw_hit or "\\" in text or _exponent(text):
            try:
                document = json.loads(body)
            except ValueError:
                return "body" if raw_hit else None
            found = _json_param(document)
            return found if found is not None else ("body" if raw_hit else None)
        return None
    return "body" if raw_hit else None


def _exponent(text: str) -> bool:
    hinted = "e1" in text or "E1" in text or "e+1" in text or "E+1" in text
    return hinted and _EXPONENT.search(text) is not None


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
    elif isinstance(value, dict):
        for key, item in value.items():
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


async def _read(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _refuse(send: Send, where: str, request_id: str) -> None:
    body = error_payload(
        "invalid_request_error", "pan_detected", MESSAGE, request_id, param=where
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
