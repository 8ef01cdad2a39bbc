"""Merchants, customers, PaymentIntents and refunds, with Stripe's statuses and transitions.

Each state change is a method that either returns the ledger transactions it implies or raises
IllegalTransition naming the current status. Terminal statuses (`succeeded`, `canceled`) never
change. A gateway call is split around these methods: `begin_*` checks the transition and
records the in-flight operation; `apply_*` takes the gateway's answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from strongroom.domain import ledger
from strongroom.domain.errors import IllegalTransition, InvalidRequest
from strongroom.domain.events import EventType, RaisesEvents
from strongroom.domain.ledger import LedgerTransaction
from strongroom.domain.money import Money

JSONDict = dict[str, Any]


class PIStatus(StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"


TERMINAL = frozenset({PIStatus.SUCCEEDED, PIStatus.CANCELED})
BANK_DEBIT = "bank_debit"  # an intent's `gateway` when it debits a linked bank account
CONFIRMABLE = frozenset(
    {PIStatus.REQUIRES_PAYMENT_METHOD, PIStatus.REQUIRES_CONFIRMATION, PIStatus.REQUIRES_ACTION}
)
CANCELABLE = frozenset(
    {
        PIStatus.REQUIRES_PAYMENT_METHOD,
        PIStatus.REQUIRES_CONFIRMATION,
        PIStatus.REQUIRES_ACTION,
        PIStatus.REQUIRES_CAPTURE,
    }
)


class CaptureMethod(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class CancellationReason(StrEnum):
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    ABANDONED = "abandoned"


class RefundReason(StrEnum):
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"


@dataclass
class LegalEntity:
    id: str
    legal_name: str
    country: str


@dataclass
class Merchant:
    """A tenant. Every other object belongs to exactly one merchant."""

    id: str
    name: str
    legal_entity: LegalEntity
    created_at: datetime


@dataclass
class Customer(RaisesEvents):
    id: str
    merchant_id: str
    email: str | None
    name: str | None
    description: str | None
    metadata: dict[str, str]
    livemode: bool
    created_at: datetime


# --- gateway answers, in gateway-neutral terms -------------------------------------------------


class OperationKind(StrEnum):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class OperationStatus(StrEnum):
    STARTED = "started"  # committed before the gateway call; the recovery point
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Approved:
    """The gateway did what was asked. `captured` says whether an authorize also captured."""

    reference: str  # the gateway's charge or refund id
    captured: bool = False


@dataclass(frozen=True)
class Declined:
    reference: str | None
    code: str
    decline_code: str | None
    message: str


@dataclass(frozen=True)
class ActionRequired:
    """The customer must complete a challenge (3-D Secure) at `url` first."""

    reference: str
    url: str


GatewayAnswer = Approved | Declined | ActionRequired


@dataclass
class GatewayOperation:
    """One call to a gateway, committed before it is made so a crash can be finished later
    with the same gateway idempotency key."""

    id: str
    merchant_id: str
    payment_intent_id: str
    kind: OperationKind
    amount: int
    currency: str
    status: OperationStatus
    request: JSONDict
    created_at: datetime
    updated_at: datetime
    refund_id: str | None = None
    locked_until: datetime | None = None

    @property
    def gateway_idempotency_key(self) -> str:
        return f"strongroom-{self.id}"


# --- PaymentIntent -------------------------------------------------------------------------------


@dataclass
class PaymentIntent(RaisesEvents):
    id: str
    merchant_id: str
    amount: int
    currency: str
    status: PIStatus
    capture_method: CaptureMethod
    livemode: bool
    created_at: datetime
    customer_id: str | None = None
    payment_method: str | None = None
    amount_capturable: int = 0
    amount_received: int = 0
    amount_refunded: int = 0  # pending and succeeded refunds, so concurrent refunds can't overdraw
    gateway: str = "sandbox"
    gateway_account_id: str | None = None  # the merchant's account there; None: built-in sandbox
    gateway_reference: str | None = None
    pending_operation_id: str | None = None
    next_action: JSONDict | None = None
    last_payment_error: JSONDict | None = None
    cancellation_reason: str | None = None
    canceled_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)

    def _refuse(self, action: str) -> IllegalTransition:
        return IllegalTransition(
            f"This PaymentIntent's status is {self.status}; you cannot {action} it.",
            status=self.status,
        )

    # confirm -------------------------------------------------------------------------------
    def begin_confirm(self, payment_method: str | None) -> None:
        if self.status not in CONFIRMABLE:
            raise self._refuse("confirm")
        if payment_method is not None:
            if self.status is PIStatus.REQUIRES_ACTION:
                raise self._refuse("change the payment method of")
            self.payment_method = payment_method
        if self.payment_method is None:
            raise InvalidRequest(
                "You must provide a payment_method to confirm this PaymentIntent.",
                code="parameter_missing",
                param="payment_method",
            )
        self.status = PIStatus.PROCESSING
        self.last_payment_error = None

    def apply_authorization(self, answer: GatewayAnswer) -> list[LedgerTransaction]:
        if self.status is not PIStatus.PROCESSING:
            raise self._refuse("finish confirming")
        self.pending_operation_id = None
        match answer:
            case Approved(reference=ref, captured=captured):
                self.gateway_reference = ref
                self.next_action = None
                txs = [ledger.hold(self.id, self.money)]
                if captured:
                    self.status = PIStatus.SUCCEEDED
                    self.amount_received = self.amount
                    txs.append(ledger.capture(self.id, self.money))
                    self.raise_event(EventType.PAYMENT_INTENT_SUCCEEDED)
                else:
                    self.status = PIStatus.REQUIRES_CAPTURE
                    self.amount_capturable = self.amount
                    self.raise_event(EventType.PAYMENT_INTENT_AMOUNT_CAPTURABLE_UPDATED)
                return txs
            case ActionRequired(reference=ref, url=url):
                self.gateway_reference = ref
                self.status = PIStatus.REQUIRES_ACTION
                self.next_action = {"type": "redirect_to_url", "redirect_to_url": {"url": url}}
                self.raise_event(EventType.PAYMENT_INTENT_REQUIRES_ACTION)
                return []
            case Declined():
                self.status = PIStatus.REQUIRES_PAYMENT_METHOD
                self.next_action = None
                self.gateway_reference = None
                self.last_payment_error = {
                    "type": "card_error",
                    "code": answer.code,
                    "decline_code": answer.decline_code,
                    "message": answer.message,
                    "payment_method": self.payment_method,
                }
                self.payment_method = None
                self.raise_event(EventType.PAYMENT_INTENT_PAYMENT_FAILED)
                return []

    # bank debits ---------------------------------------------------------------------------
    def begin_bank_debit(self, bank_account_id: str) -> list[LedgerTransaction]:
        """Debit a verified bank account: `processing` until the debit settles, the amount
        held meanwhile (a bank debit is captured when it settles, never before)."""
        self.begin_confirm(bank_account_id)
        self.gateway, self.gateway_account_id = BANK_DEBIT, None
        self.raise_event(EventType.PAYMENT_INTENT_PROCESSING)
        return [ledger.hold(self.id, self.money)]

    def settle_bank_debit(self) -> list[LedgerTransaction]:
        if self.status is not PIStatus.PROCESSING or self.gateway != BANK_DEBIT:
            raise self._refuse("settle the bank debit of")
        self.status = PIStatus.SUCCEEDED
        self.amount_received = self.amount
        self.raise_event(EventType.PAYMENT_INTENT_SUCCEEDED)
        return [ledger.capture(self.id, self.money)]

    def return_bank_debit(self, return_code: str, reason: str) -> list[LedgerTransaction]:
        """The customer's bank returned the debit (NACHA return code, e.g. R01): the hold is
        reversed and the intent needs another payment method, as after a card decline."""
        if self.status is not PIStatus.PROCESSING or self.gateway != BANK_DEBIT:
            raise self._refuse("return the bank debit of")
        self.status = PIStatus.REQUIRES_PAYMENT_METHOD
        self.last_payment_error = {
            "type": "card_error",
            "code": "bank_debit_returned",
            "decline_code": reason,
            "return_code": return_code,
            "message": f"The customer's bank returned the debit ({return_code}: {reason}).",
            "payment_method": self.payment_method,
        }
        self.payment_method = None
        self.raise_event(EventType.PAYMENT_INTENT_PAYMENT_FAILED)
        return [ledger.release(self.id, self.money)]

    # capture -------------------------------------------------------------------------------
    def begin_capture(self, amount_to_capture: int | None) -> int:
        if self.status is not PIStatus.REQUIRES_CAPTURE:
            raise self._refuse("capture")
        amount = self.amount_capturable if amount_to_capture is None else amount_to_capture
        if amount <= 0:
            raise InvalidRequest(
                "amount_to_capture must be a positive integer.",
                code="amount_too_small",
                param="amount_to_capture",
            )
        if amount > self.amount_capturable:
            raise InvalidRequest(
                f"amount_to_capture ({amount}) is greater than the amount capturable "
                f"({self.amount_capturable}).",
                code="amount_too_large",
                param="amount_to_capture",
            )
        return amount

    def apply_capture(self, amount: int) -> list[LedgerTransaction]:
        if self.status is not PIStatus.REQUIRES_CAPTURE:
            raise self._refuse("finish capturing")
        self.pending_operation_id = None
        remainder = self.amount_capturable - amount
        self.status = PIStatus.SUCCEEDED
        self.amount_received = amount
        self.amount_capturable = 0
        txs = [ledger.capture(self.id, Money(amount, self.currency))]
        if remainder:
            txs.append(ledger.release(self.id, Money(remainder, self.currency)))
        self.raise_event(EventType.PAYMENT_INTENT_SUCCEEDED)
        return txs

    # cancel --------------------------------------------------------------------------------
    def needs_void(self) -> bool:
        """Canceling an authorized intent must release the hold at the gateway first."""
        return self.status is PIStatus.REQUIRES_CAPTURE

    def cancel(self, reason: str | None, now: datetime) -> list[LedgerTransaction]:
        if self.status not in CANCELABLE:
            raise self._refuse("cancel")
        self.pending_operation_id = None
        txs: list[LedgerTransaction] = []
        if self.amount_capturable:
            txs.append(ledger.release(self.id, Money(self.amount_capturable, self.currency)))
        self.status = PIStatus.CANCELED
        self.amount_capturable = 0
        self.next_action = None
        self.cancellation_reason = reason
        self.canceled_at = now
        self.raise_event(EventType.PAYMENT_INTENT_CANCELED)
        return txs

    # refunds -------------------------------------------------------------------------------
    def reserve_refund(self, amount: int | None) -> int:
        """Reserve `amount` (default: all that is left) for a new pending refund."""
        if self.status is not PIStatus.SUCCEEDED:
            raise IllegalTransition(
                f"This PaymentIntent's status is {self.status}; only a succeeded "
                "PaymentIntent can be refunded.",
                status=self.status,
            )
        remaining = self.amount_received - self.amount_refunded
        if remaining <= 0:
            raise InvalidRequest(
                f"PaymentIntent {self.id} has already been refunded.",
                code="charge_already_refunded",
                param="payment_intent",
            )
        amount = remaining if amount is None else amount
        if amount <= 0:
            raise InvalidRequest(
                "Refund amount must be a positive integer.", code="amount_too_small", param="amount"
            )
        if amount > remaining:
            raise InvalidRequest(
                f"Refund amount ({amount}) is greater than the unrefunded amount ({remaining}).",
                code="amount_too_large",
                param="amount",
            )
        self.amount_refunded += amount
        return amount

    def release_refund(self, amount: int) -> None:
        """A refund failed: its reservation goes back."""
        self.amount_refunded -= amount


@dataclass
class Refund(RaisesEvents):
    id: str
    merchant_id: str
    payment_intent_id: str
    amount: int
    currency: str
    status: RefundStatus
    livemode: bool
    created_at: datetime
    reason: str | None = None
    failure_reason: str | None = None
    gateway_reference: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def apply(self, answer: GatewayAnswer) -> list[LedgerTransaction]:
        if self.status is not RefundStatus.PENDING:
            raise IllegalTransition(
                f"This refund's status is {self.status}.",
                status=self.status,
                code="refund_unexpected_state",
            )
        match answer:
            case Approved(reference=ref):
                self.status = RefundStatus.SUCCEEDED
                self.gateway_reference = ref
                self.raise_event(EventType.REFUND_UPDATED)
                return [
                    ledger.refund(
                        self.payment_intent_id, self.id, Money(self.amount, self.currency)
                    )
                ]
            case Declined(code=code):
                self.status = RefundStatus.FAILED
                self.failure_reason = code
                self.raise_event(EventType.REFUND_FAILED)
                return []
            case ActionRequired():
                raise ValueError("a refund never requires customer action")
