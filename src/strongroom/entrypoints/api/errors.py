"""Exception handlers: every error leaves in the one JSON shape, never with a stack trace."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from strongroom.adapters.reporting.port import ReportingUnavailable
from strongroom.domain.errors import RateLimited, ServiceUnavailable, StrongroomError
from strongroom.entrypoints.api.rendering import error_payload, render

log = structlog.get_logger(__name__)


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def _json(status: int, body: str) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _param(loc: tuple[Any, ...]) -> str | None:
    """pydantic's location ('body', 'metadata', 'k') → Stripe's param name 'metadata[k]'."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path") else []
    if loc and loc[0] == "header":
        return str(loc[1]) if len(loc) > 1 else None
    if not parts:
        return None
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


# Fields only the server sets; a request naming one gets a message saying so (still 400, as for
# any unknown parameter: request bodies forbid extra fields).
SERVER_OWNED = frozenset(
    {"merchant", "status", "amount_refunded", "amount_received", "livemode", "id", "object"}
)

_CODES = {
    "missing": "parameter_missing",
    "extra_forbidden": "parameter_unknown",
    "int_type": "parameter_invalid_integer",
    "int_parsing": "parameter_invalid_integer",
    "bool_type": "parameter_invalid_boolean",
    "bool_parsing": "parameter_invalid_boolean",
    "json_invalid": "parse_error",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(StrongroomError)
    async def _known(request: Request, exc: StrongroomError) -> Response:
        stored = render(exc, request_id_of(request))
        response = _json(stored.status, stored.body)
        if isinstance(exc, RateLimited | ServiceUnavailable):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        kind = str(first.get("type", ""))
        param = None if kind == "json_invalid" else _param(tuple(first.get("loc", ())))
        if kind == "json_invalid":
            message = "Invalid JSON in the request body."
        elif kind == "missing" and param is None:
            message = "The request body is required."
        elif kind == "missing":
            message = f"Missing required param: {param}."
        elif kind == "extra_forbidden" and param in SERVER_OWNED:
            message = f"{param} is set by Strongroom and cannot be sent."
        elif kind == "extra_forbidden":
            message = f"Received unknown parameter: {param}."
        elif kind == "string_pattern_mismatch":
            message = f"Invalid {param}: it contains characters that are not allowed here."
        elif param:
            message = f"Invalid {param}: {first.get('msg', 'invalid value')}."
        else:
            message = "The request body must be a JSON object."
        body = error_payload(
            "invalid_request_error",
            _CODES.get(kind, "parameter_invalid"),
            message,
            request_id_of(request),
            param,
        )
        return _json(400, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "resource_missing", 405: "method_not_allowed"}
        message = "Unrecognized request URL." if exc.status_code == 404 else str(exc.detail)
        body = error_payload(
            "invalid_request_error",
            codes.get(exc.status_code, "invalid_request"),
            message,
            request_id_of(request),
        )
        return _json(exc.status_code, body)

    @app.exception_handler(ReportingUnavailable)
    async def _reporting_down(request: Request, exc: ReportingUnavailable) -> Response:
        # The reporting store is apart from the one taking payments: its outage is a 503 on
        # reports alone, which the client may retry.
        log.warning("reporting store unavailable", request_id=request_id_of(request))
        body = error_payload(
            "api_error",
            "reporting_unavailable",
            "Reports are unavailable for the moment; retry shortly.",
            request_id_of(request),
        )
        return _json(503, body)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", request_id=request_id_of(request))
        request_id = request_id_of(request)
        body = error_payload(
            "api_error", "internal_error", "An internal error occurred.", request_id
        )
        # This handler runs outside EdgeMiddleware, which would otherwise add the header.
        return Response(
            body,
            status_code=500,
            media_type="application/json",
            headers={"Request-Id": request_id},
        )
