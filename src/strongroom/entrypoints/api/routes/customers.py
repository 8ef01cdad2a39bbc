"""/v1/customers"""

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
from strongroom.entrypoints.api.rendering import customer_out
from strongroom.entrypoints.api.routes._docs import READ, WRITE, errors
from strongroom.entrypoints.api.schemas import CustomerCreate, CustomerOut, PathId
from strongroom.service_layer import commands as c

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.post(
    "",
    response_model=CustomerOut,
    responses=errors(*WRITE),
    openapi_extra=action("customers.create"),
)
async def create_customer(
    respond: RespondDep,
    caller: CallerDep,
    container: ContainerDep,
    body: CustomerCreate | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    body = body or CustomerCreate()
    cmd = c.CreateCustomer(**body.model_dump())
    return await respond(
        idempotency_key, body, lambda idem: container.payments.create_customer(caller, cmd, idem)
    )


@router.get(
    "/{customer_id}",
    response_model=CustomerOut,
    responses=errors(*READ),
    openapi_extra=action("customers.read"),
)
async def get_customer(customer_id: PathId, caller: CallerDep, container: ContainerDep) -> Response:
    customer = await container.payments.get_customer(caller, customer_id)
    return Response(customer_out(customer).model_dump_json(), media_type="application/json")
