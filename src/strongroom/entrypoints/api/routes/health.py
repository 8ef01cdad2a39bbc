"""/healthz: 200 once the database answers, so orchestrators route traffic only then."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import text

from strongroom.entrypoints.api.deps import ContainerDep
from strongroom.entrypoints.api.routes._docs import errors
from strongroom.entrypoints.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: errors(400)[400] | {}})
async def healthz(container: ContainerDep) -> Response:
    async with container.engines.read.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return Response('{"status":"ok"}', media_type="application/json")
