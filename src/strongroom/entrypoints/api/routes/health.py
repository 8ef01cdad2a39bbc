"""/healthz: 200 once the database answers, 503 while it does not, so orchestrators route
traffic only to a ready process."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from strongroom.entrypoints.api.deps import ContainerDep
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.rendering import error_payload
from strongroom.entrypoints.api.schemas import ErrorBody, Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": ErrorBody, "description": "The database does not answer."}},
)
async def healthz(request: Request, container: ContainerDep) -> Response:
    try:
        async with container.engines.read.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError):
        body = error_payload(
            "api_error",
            "service_unavailable",
            "The database does not answer.",
            request_id_of(request),
        )
        return Response(body, status_code=503, media_type="application/json")
    return Response('{"status":"ok"}', media_type="application/json")
