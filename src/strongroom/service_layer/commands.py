"""Commands: what a caller asks Strongroom to do, already parsed into plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from strongroom.domain.audit import NO_ORIGIN, Origin
from strongroom.domain.authorization import Decision
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
    # What the authorization policy reads about who is asking:
    role: str | None = None  # an operator's role
    scopes: frozenset[str] | None = None  # a restricted key's scopes; None: a full secret key
    publishable: bool = False  # a pk_ key, which may only tokenize
    second_factor_at: datetime | None = None  # an operator's last second factor
    # The policy's decision on the request's action, once asked; audit events carry it.
    decision: Decision | None = None


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
