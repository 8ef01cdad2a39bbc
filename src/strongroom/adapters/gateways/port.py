"""The gateway port. Every call carries our idempotency key, so a retry after a crash or a
timeout can never charge twice; an answer we could not read raises GatewayOutcomeUnknown. A
request that certainly never reached the gateway raises GatewayNotReached: only then may a
payment fail over to another gateway."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from strongroom.domain.model import Declined, GatewayAnswer


class GatewayOutcomeUnknown(Exception):
    """We do not know whether the gateway acted. Retry with the same idempotency key."""


class GatewayTimeout(GatewayOutcomeUnknown):
    """No answer in time."""


class GatewayServerError(GatewayOutcomeUnknown):
    """The gateway answered with a 5xx."""


class GatewayNotReached(Exception):
    """The request never reached the gateway (connection refused, name not resolved, circuit
    breaker open): nothing can have been charged, so another gateway may be tried."""


class ChargeState(StrEnum):
    REQUIRES_ACTION = "requires_action"  # waiting for the customer's 3-D Secure challenge
    AUTHORIZED = "authorized"  # held, not captured
    CAPTURED = "captured"  # captured (settling or settled)
    CANCELED = "canceled"  # voided, or the authorization expired
    FAILED = "failed"  # declined or rejected


@dataclass(frozen=True)
class ChargeStatus:
    """What the gateway says about a charge now. A gateway webhook is only a trigger: its
    handler reads this and applies it, so an old or repeated event can never move a payment
    backwards."""

    reference: str
    state: ChargeState
    amount_captured: int = 0  # minor units
    amount_refunded: int = 0
    decline: Declined | None = None  # when FAILED


class Gateway(Protocol):
    name: str

    async def authorize(
        self,
        *,
        payment_method: str,
        amount: int,
        currency: str,
        capture: bool,
        idempotency_key: str,
    ) -> GatewayAnswer:
        """Charge (capture=True) or place a hold on the card the token stands for."""
        ...

    async def confirm_action(
        self, *, reference: str, capture: bool, idempotency_key: str
    ) -> GatewayAnswer:
        """Finish a charge that waited for the customer's 3-D Secure challenge."""
        ...

    async def capture(
        self, *, reference: str, amount: int, idempotency_key: str
    ) -> GatewayAnswer: ...

    async def void(self, *, reference: str, idempotency_key: str) -> GatewayAnswer: ...

    async def refund(
        self, *, reference: str, amount: int, idempotency_key: str
    ) -> GatewayAnswer: ...

    async def retrieve(self, *, reference: str) -> ChargeStatus:
        """The charge's current state, read from the gateway (never cached)."""
        ...
