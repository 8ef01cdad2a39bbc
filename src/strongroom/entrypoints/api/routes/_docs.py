"""The error responses each route documents in OpenAPI (all in the one error shape)."""

from __future__ import annotations

from typing import Any

from strongroom.entrypoints.api.schemas import ErrorBody

_DESCRIPTIONS = {
    400: "Invalid request: a parameter is missing, unknown or wrong.",
    401: "No valid API key.",
    402: "The card was declined.",
    403: "The key may not do this.",
    404: "No such object.",
    409: "The object's status forbids this, or the Idempotency-Key is in use.",
    413: "The request body is too large.",
    422: "The Idempotency-Key was used with other parameters or on another endpoint.",
    429: "Too many requests for this key or address; retry after Retry-After seconds.",
    502: "The gateway's answer is unknown; retry with the same Idempotency-Key.",
    503: "The shared rate limiter is down, so writes are paused; retry after Retry-After.",
}

READ = (400, 401, 403, 404, 429)
WRITE = (400, 401, 403, 404, 409, 413, 422, 429, 503)
PAYMENT = (*WRITE, 402, 502)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}
