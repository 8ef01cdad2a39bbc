"""/v1/payment_intents"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from strongroom.entrypoints.api.deps import (
    CallerDep,
    ContainerDep,
    IdempotencyKey,
    RespondDep,
    action,
)
from strongroom.entrypoints.api.rendering import payment_intent_out
from strongroom.entrypoints.api.routes._docs import PAYMENT, READ, errors
from strongroom.entrypoints.api.schemas import (
    NO_NUL,
    PathId,
    PaymentIntentCancel,
    PaymentIntentCapture,
    PaymentIntentConfirm,
    PaymentIntentCreate,
    PaymentIntentList,
    PaymentIntentOut,
)
from strongroom.service_layer import commands as c

router = APIRouter(prefix="/v1/payment_intents", tags=["payment_intents"])


@router.post(
    "",
    response_model=PaymentIntentOut,
    responses=errors(*PAYMENT),
    openapi_extra=action("payment_intents.create"),
)
async def create_payment_intent(
    body: PaymentIntentCreate,
    respond: RespondDep,
    caller: CallerDep,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    cmd = c.CreatePaymentIntent(**body.model_dump())
    return await respond(
        idempotency_key,
        body,
        lambda idem: container.payments.create_payment_intent(caller, cmd, idem),
    )


@router.get(
    "",
    response_model=PaymentIntentList,
    responses=errors(*READ),
    openapi_extra=action("payment_intents.read"),
)
async def list_payment_intents(
    caller: CallerDep,
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    starting_after: Annotated[
        str | None, Query(min_length=1, max_length=40, pattern=NO_NUL)
    ] = None,
) -> Response:
    items, has_more = await container.payments.list_payment_intents(
        caller, limit=limit, starting_after=starting_after
    )
    page = PaymentIntentList(
        url="/v1/payment_intents",
        has_more=has_more,
        data=[payment_intent_out(pi) for pi in items],
    )
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/{intent_id}",
    response_model=PaymentIntentOut,
    responses=errors(*READ),
    openapi_extra=action("payment_intents.read"),
)
async def get_payment_intent(
    intent_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    pi = await container.payments.get_payment_intent(caller, intent_id)
    return Response(payment_intent_out(pi).model_dump_json(), media_type="application/json")


@router.post(
    "/{intent_id}/confirm",
    response_model=PaymentIntentOut,
    responses=errors(*PAYMENT),
    openapi_extra=action("payment_intents.confirm"),
)
async def confirm_payment_intent(
    intent_id: PathId,
    respond: RespondDep,
    caller: CallerDep,
    container: ContainerDep,
    body: PaymentIntentConfirm | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    cmd = c.ConfirmPaymentIntent(intent_id, body.payment_method if body else None)
    return await respond(
        idempotency_key, body, lambda idem: container.payments.confirm(caller, cmd, idem)
    )


@router.post(
    "/{intent_id}/capture",
    response_model=PaymentIntentOut,
    responses=errors(*PAYMENT),
    openapi_extra=action("payment_intents.capture"),
)
async def capture_payment_intent(
    intent_id: PathId,
    respond: RespondDep,
    caller: CallerDep,
    container: ContainerDep,
    body: PaymentIntentCapture | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    cmd = c.CapturePaymentIntent(intent_id, body.amount_to_capture if body else None)
    return await respond(
        idempotency_key, body, lambda idem: container.payments.capture(caller, cmd, idem)
    )


@router.post(
    "/{intent_id}/cancel",
    response_model=PaymentIntentOut,
    responses=errors(*PAYMENT),
    openapi_extra=action("payment_intents.cancel"),
)
async def cancel_payment_intent(
    intent_id: PathId,
    respond: RespondDep,
    caller: CallerDep,
    container: ContainerDep,
    body: PaymentIntentCancel | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    reason = body.cancellation_reason if body else None
    cmd = c.CancelPaymentIntent(intent_id, reason)
    return await respond(
        idempotency_key, body, lambda idem: container.payments.cancel(caller, cmd, idem)
    )
