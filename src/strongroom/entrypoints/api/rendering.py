"""Domain objects and errors to JSON bodies: the one place response shapes are decided."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from strongroom.domain.bank_accounts import MAX_ATTEMPTS, BankAccount
from strongroom.domain.errors import (
    AuthenticationError,
    CardError,
    GatewayUnavailable,
    IdempotencyKeyInUse,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    ResourceMissing,
    ServiceUnavailable,
    StrongroomError,
)
from strongroom.domain.model import Customer, PaymentIntent, Refund
from strongroom.entrypoints.api.schemas import (
    BankAccountOut,
    CustomerOut,
    ErrorBody,
    ErrorDetail,
    PaymentIntentOut,
    RefundOut,
)
from strongroom.service_layer.idempotency import StoredResponse


def json_response(model: BaseModel, *, secret: bool = False) -> Response:
    """A response object as JSON. One that carries a secret (shown once) must not linger in
    any cache on the way back."""
    headers = {"Cache-Control": "no-store"} if secret else None
    return Response(model.model_dump_json(), media_type="application/json", headers=headers)


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def customer_out(c: Customer) -> CustomerOut:
    return CustomerOut(
        id=c.id,
        email=c.email,
        name=c.name,
        description=c.description,
        metadata=c.metadata,
        livemode=c.livemode,
        created=int(c.created_at.timestamp()),
    )


def payment_intent_out(pi: PaymentIntent) -> PaymentIntentOut:
    return PaymentIntentOut(
        id=pi.id,
        amount=pi.amount,
        amount_capturable=pi.amount_capturable,
        amount_received=pi.amount_received,
        currency=pi.currency,
        status=pi.status,
        capture_method=pi.capture_method,
        customer=pi.customer_id,
        payment_method=pi.payment_method,
        latest_charge=pi.gateway_reference,
        gateway=pi.gateway,
        next_action=pi.next_action,
        last_payment_error=pi.last_payment_error,
        cancellation_reason=pi.cancellation_reason,
        canceled_at=_ts(pi.canceled_at),
        metadata=pi.metadata,
        livemode=pi.livemode,
        created=int(pi.created_at.timestamp()),
    )


def refund_out(r: Refund) -> RefundOut:
    return RefundOut(
        id=r.id,
        amount=r.amount,
        currency=r.currency,
        payment_intent=r.payment_intent_id,
        status=r.status,
        reason=r.reason,
        failure_reason=r.failure_reason,
        metadata=r.metadata,
        created=int(r.created_at.timestamp()),
    )


def bank_account_out(a: BankAccount) -> BankAccountOut:
    return BankAccountOut(
        id=a.id,
        status=a.status.value,
        verification_status=a.verification_status.value,
        verification_attempts_remaining=0
        if a.settled
        else max(0, MAX_ATTEMPTS - a.verification_attempts),
        verify_by=int(a.verify_by.timestamp()),
        customer=a.customer_id,
        institution=a.institution,
        account_type=a.account_type,
        last4=a.last4,
        livemode=a.livemode,
        created=int(a.created_at.timestamp()),
    )


def api_object(obj: object) -> dict[str, Any]:
    """An object as the API shows it, for the events that carry it (webhook bodies)."""
    match obj:
        case PaymentIntent():
            return payment_intent_out(obj).model_dump(mode="json")
        case Refund():
            return refund_out(obj).model_dump(mode="json")
        case Customer():
            return customer_out(obj).model_dump(mode="json")
        case BankAccount():
            return bank_account_out(obj).model_dump(mode="json")
    raise TypeError(f"no API shape for {type(obj).__name__}")


def status_of(error: StrongroomError) -> int:
    match error:
        case ResourceMissing(param="id"):
            return 404
        case InvalidRequest():
            return 400
        case IllegalTransition() | IdempotencyKeyInUse():
            return 409
        case IdempotencyMismatch():
            return 422
        case CardError():
            return 402
        case AuthenticationError():
            return 401
        case PermissionDenied():
            return 403
        case RateLimited():
            return 429
        case ServiceUnavailable():
            return 503
        case GatewayUnavailable():
            return 502
        case _:
            return 500


def error_payload(
    type_: str, code: str, message: str, request_id: str, param: str | None = None
) -> str:
    """An error body for failures outside the service layer (validation, routing, limits)."""
    detail = ErrorDetail(type=type_, code=code, message=message, param=param, request_id=request_id)
    return ErrorBody(error=detail).model_dump_json()


def error_body(error: StrongroomError, request_id: str) -> ErrorBody:
    detail = ErrorDetail(
        type=error.type,
        code=error.code,
        message=error.message,
        param=error.param,
        request_id=request_id,
    )
    if isinstance(error, CardError):
        detail.decline_code = error.decline_code
        detail.payment_intent = error.payment_intent_id
    return ErrorBody(error=detail)


def render(outcome: object, request_id: str) -> StoredResponse:
    """The response for a service outcome: an object (200) or a deliberate error."""
    match outcome:
        case StrongroomError():
            body = error_body(outcome, request_id).model_dump_json()
            return StoredResponse(status_of(outcome), body)
        case PaymentIntent():
            return StoredResponse(200, payment_intent_out(outcome).model_dump_json())
        case Refund():
            return StoredResponse(200, refund_out(outcome).model_dump_json())
        case Customer():
            return StoredResponse(200, customer_out(outcome).model_dump_json())
        case BankAccount():
            return StoredResponse(200, bank_account_out(outcome).model_dump_json())
    raise TypeError(f"cannot render {type(outcome).__name__}")
