"""Edge middleware, as plain ASGI for speed: a request id on every response, and a cap on
request bodies enforced before anything parses them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.domain.ids import new_id
from strongroom.entrypoints.api.rendering import error_payload


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req", 20)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        if scope["method"] in BODY_METHODS:
            body = await read_body(receive, limit=self.max_body_bytes)
            if body is None:
                await self._too_large(send_with_id, request_id)
                return
            receive = replay_body(body)
        await self.app(scope, receive, send_with_id)

    async def _too_large(self, send: Send, request_id: str) -> None:
        body = error_payload(
            "invalid_request_error",
            "request_too_large",
            f"Request bodies may be at most {self.max_body_bytes} bytes.",
            request_id,
        ).encode()
        # The rest of the body was never read: close rather than leave it in the connection.
        await send_error(send, 413, body, close=True)


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def read_body(receive: Receive, *, limit: int | None = None) -> bytes | None:
    """The whole request body, or None once it passes `limit` (nothing past it is buffered)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_error(
    send: Send,
    status: int,
    body: bytes,
    *,
    close: bool = False,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A JSON error response sent straight from middleware, before any route runs."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def replay_body(body: bytes) -> Receive:
    """A `receive` that hands the app a body already read, so middleware can inspect it."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
