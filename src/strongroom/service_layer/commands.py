"""Commands: what a caller asks Strongroom to do, already parsed into plain values."""

from __future__ import annotations

from dataclasses import dataclass, field

from strongroom.domain.audit import NO_ORIGIN, Origin
from strongroom.domain.model import CaptureMethod


@dataclass(frozen=True)
class Caller:
    """Who is asking: the merchant a key belongs to, and whether it is a live key; plus, for the
    audit log, which key it was (or which operator, in the console) and where the request came
    from."""

    merchant_id: str
    livemode: bool
    key_id: str | None = None
    origin: Origin = NO_ORIGIN
    operator_id: str | None = None


@dataclass(frozen=True)
class CreateCustomer:
    email: str | None = None
    name: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreatePaymentIntent:
    amount: int
    currency: str
    customer: str | None = None
    payment_method: str | None = None
    capture_method: CaptureMethod = CaptureMethod.AUTOMATIC
    confirm: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfirmPaymentIntent:
    payment_intent: str
    payment_method: str | None = None


@dataclass(frozen=True)
class CapturePaymentIntent:
    payment_intent: str
    amount_to_capture: int | None = None


@dataclass(frozen=True)
class CancelPaymentIntent:
    payment_intent: str
    cancellation_reason: str | None = None


@dataclass(frozen=True)
class CreateRefund:
    payment_intent: str
    amount: int | None = None
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
