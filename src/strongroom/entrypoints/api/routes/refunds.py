"""/v1/refunds"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from strongroom.entrypoints.api.deps import (
    CallerDep,
    ContainerDep,
    IdempotencyKey,
    RespondDep,
    action,
)
from strongroom.entrypoints.api.rendering import refund_out
from strongroom.entrypoints.api.routes._docs import PAYMENT, READ, errors
from strongroom.entrypoints.api.schemas import PathId, RefundCreate, RefundOut
from strongroom.service_layer import commands as c

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


@router.post(
    "", response_model=RefundOut, responses=errors(*PAYMENT), openapi_extra=action("refunds.create")
)
async def create_refund(
    body: RefundCreate,
    respond: RespondDep,
    caller: CallerDep,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    cmd = c.CreateRefund(**body.model_dump())
    return await respond(
        idempotency_key, body, lambda idem: container.payments.create_refund(caller, cmd, idem)
    )


@router.get(
    "/{refund_id}",
    response_model=RefundOut,
    responses=errors(*READ),
    openapi_extra=action("refunds.read"),
)
async def get_refund(refund_id: PathId, caller: CallerDep, container: ContainerDep) -> Response:
    refund = await container.payments.get_refund(caller, refund_id)
    return Response(refund_out(refund).model_dump_json(), media_type="application/json")
