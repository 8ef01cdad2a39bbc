"""The gateway port. Every call carries our idempotency key, so a retry after a crash or a
timeout can never charge twice; an answer we could not read raises GatewayOutcomeUnknown."""

from __future__ import annotations

from typing import Protocol

from strongroom.domain.model import GatewayAnswer


class GatewayOutcomeUnknown(Exception):
    """We do not know whether the gateway acted. Retry with the same idempotency key."""


class GatewayTimeout(GatewayOutcomeUnknown):
    """No answer in time."""


class GatewayServerError(GatewayOutcomeUnknown):
    """The gateway answered with a 5xx."""


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
