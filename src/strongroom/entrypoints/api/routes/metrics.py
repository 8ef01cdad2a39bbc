"""GET /metrics: Prometheus text for scrapers, outside the documented API.

Open by default, as Prometheus scrapes usually are; with STRONGROOM_METRICS_TOKEN set, only a
request carrying `Authorization: Bearer <token>` gets an answer (compared in constant time)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from strongroom.domain.errors import AuthenticationError
from strongroom.entrypoints.api.deps import ContainerDep

router = APIRouter(include_in_schema=False)


def check_token(expected: str, authorization: str | None) -> None:
    """Raises AuthenticationError unless `authorization` is `Bearer <expected>`; an empty
    `expected` lets every request through."""
    if not expected:
        return
    scheme, _, given = (authorization or "").partition(" ")
    # Compared even when the scheme is wrong, so the answer takes the same time either way.
    matches = hmac.compare_digest(given.strip().encode(), expected.encode())
    if scheme.lower() != "bearer" or not matches:
        raise AuthenticationError(
            "/metrics needs 'Authorization: Bearer <STRONGROOM_METRICS_TOKEN>'.",
            code="metrics_token_invalid",
        )


@router.get("/metrics")
async def metrics(request: Request, container: ContainerDep) -> Response:
    check_token(
        container.settings.metrics_token.get_secret_value(), request.headers.get("authorization")
    )
    body = await container.metrics.exposition(
        container.engines.read,
        container.clock.now(),
        projection_lag=_projection_lag(container),
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _projection_lag(container: Any) -> Any:
    """The reporting service's `lag` when the container has one (it is being built alongside
    this; until it lands there is no projection to report on)."""
    reporting = getattr(container, "reporting", None)
    lag = getattr(reporting, "lag", None)
    return lag if callable(lag) else None
