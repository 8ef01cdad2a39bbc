"""The outermost middleware, plain ASGI: times every request into the latency histogram and
wraps it in a server span, both labelled by route template, so refusals at the edge (body cap,
PAN guard) are measured too."""

from __future__ import annotations

import time

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.adapters.observability.metrics import UNMATCHED_ROUTE, Metrics
from strongroom.adapters.observability.tracing import Tracing

# Any other method is labelled "other": a label's values are series kept forever, and a
# client chooses the method.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The matched route's template (`/v1/payment_intents/{id}`), set in the scope by the
    router once it has matched; never the raw path, which carries ids."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED_ROUTE


class Telemetry:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, tracing: Tracing) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "other"
        status = 500  # what the server sends if the app raises before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        with self.tracing.span(
            method, {"http.request.method": method}, kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_noting_status)
            finally:
                route = route_template(scope)
                self.metrics.observe_request(method, route, status, time.perf_counter() - started)
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    request_id = scope.get("state", {}).get("request_id")
                    if request_id:
                        span.set_attribute("strongroom.request_id", str(request_id))
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
