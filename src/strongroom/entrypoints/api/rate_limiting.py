"""The rate-limit middleware (plain ASGI). A request without credentials (and every sign-in
and gateway webhook) counts against its client address's window for its route class before
anything else runs; one with an API key counts against the key's once get_caller knows it, or
against its address's if the key is refused, so guessing keys is limited per address. Every
answer carries the RateLimit-Policy and RateLimit fields of the window that applied."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.domain.errors import RateLimited, ServiceUnavailable
from strongroom.entrypoints.api.middleware import send_error
from strongroom.entrypoints.api.rendering import error_payload
from strongroom.service_layer.rate_limits import (
    RateLimits,
    RouteClass,
    Throttled,
    Window,
    route_class,
)

WINDOWS = "rate_limit_windows"  # in the request's state: the windows counted so far
# Sign-ins and gateways' webhooks count against their address even with credentials, as do
# the routes that check credentials of their own (a browser's publishable key, an app token)
# rather than an API key through get_caller.
ADDRESS_ALWAYS = frozenset({RouteClass.LOGIN, RouteClass.WEBHOOKS})
OWN_CREDENTIALS = frozenset({"/v1/tokens", "/v1/operator"})


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        windows: list[Window] = state.setdefault(WINDOWS, [])
        route = route_class(scope["method"], scope["path"])
        client = scope.get("client")
        address = client[0] if client else None
        keyed = any(name == b"authorization" for name, _ in scope.get("headers", ()))
        try:
            if not keyed or route in ADDRESS_ALWAYS or scope["path"] in OWN_CREDENTIALS:
                await self.limits.per_address(route, address)
        except (RateLimited, ServiceUnavailable) as exc:
            if isinstance(exc, Throttled):
                windows.append(exc.window)
            await self._refuse(send, exc, state.get("request_id", ""), windows)
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                if not windows:  # no key's window: the address's
                    window = await self.limits.address_window(route, address)
                    windows.extend([window] if window is not None else [])
                headers = list(message.get("headers", []))
                headers += fields(windows)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_fields)

    async def _refuse(
        self,
        send: Send,
        exc: RateLimited | ServiceUnavailable,
        request_id: str,
        windows: list[Window],
    ) -> None:
        status = 429 if isinstance(exc, RateLimited) else 503
        body = error_payload(exc.type, exc.code, exc.message, request_id).encode()
        headers = [(b"retry-after", str(exc.retry_after).encode()), *fields(windows)]
        await send_error(send, status, body, headers=headers)


def fields(windows: list[Window]) -> list[tuple[bytes, bytes]]:
    if not windows:
        return []
    return [
        (b"ratelimit-policy", ", ".join(w.policy_field() for w in windows).encode()),
        (b"ratelimit", ", ".join(w.field() for w in windows).encode()),
    ]
