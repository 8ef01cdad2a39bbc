"""Domain events: what happened to a merchant's objects, named in the past tense as Stripe names
them (`payment_intent.succeeded`). Aggregates raise them; the unit of work writes them to the
outbox in the transaction of the change; the relay publishes them in commit order."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    CUSTOMER_CREATED = "customer.created"
    PAYMENT_INTENT_CREATED = "payment_intent.created"
    PAYMENT_INTENT_REQUIRES_ACTION = "payment_intent.requires_action"
    PAYMENT_INTENT_PROCESSING = "payment_intent.processing"  # a bank debit, until it settles
    PAYMENT_INTENT_AMOUNT_CAPTURABLE_UPDATED = "payment_intent.amount_capturable_updated"
    PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"
    PAYMENT_INTENT_PAYMENT_FAILED = "payment_intent.payment_failed"
    PAYMENT_INTENT_CANCELED = "payment_intent.canceled"
    REFUND_CREATED = "refund.created"
    REFUND_UPDATED = "refund.updated"  # the refund succeeded
    REFUND_FAILED = "refund.failed"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    BANK_ACCOUNT_CREATED = "bank_account.created"
    BANK_ACCOUNT_VERIFIED = "bank_account.verified"
    BANK_ACCOUNT_VERIFICATION_FAILED = "bank_account.verification_failed"
    BANK_ACCOUNT_VERIFICATION_EXPIRED = "bank_account.verification_expired"
    # A right password followed by a wrong second factor: someone may hold the password.
    OPERATOR_SECOND_FACTOR_FAILED = "operator.second_factor_failed"


class RaisesEvents:
    """Mixin for aggregates: transitions append the events they imply; the unit of work takes
    them when the aggregate is saved."""

    def raise_event(self, event_type: EventType) -> None:
        pending: list[EventType] = self.__dict__.setdefault("_pending_events", [])
        pending.append(event_type)

    def take_events(self) -> list[EventType]:
        taken: list[EventType] = self.__dict__.pop("_pending_events", [])
        return taken


@dataclass(frozen=True)
class Event:
    """One committed event as it travels: `seq` is its outbox position, increasing in commit
    order for each aggregate (the aggregate's row lock orders its writers), so a consumer can
    tell a newer state from an older one whatever order deliveries arrive in. `data` is the
    object as the API showed it at that commit."""

    seq: int
    id: str
    type: str
    merchant_id: str
    livemode: bool
    aggregate_type: str
    aggregate_id: str
    created_at: datetime
    data: dict[str, Any]

    def to_json(self) -> bytes:
        body = asdict(self) | {"created_at": self.created_at.isoformat()}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        body = json.loads(raw)
        body["created_at"] = datetime.fromisoformat(body["created_at"]).astimezone(UTC)
        return cls(**body)

    def merchant_payload(self) -> dict[str, Any]:
        """The body merchants receive, shaped like a Stripe event."""
        return {
            "id": self.id,
            "object": "event",
            "type": self.type,
            "created": int(self.created_at.timestamp()),
            "livemode": self.livemode,
            "data": {"object": self.data},
        }
