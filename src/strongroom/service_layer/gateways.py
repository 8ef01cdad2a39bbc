"""Which gateway a payment goes to, and the circuit breaker in front of each.

Every merchant gateway account gets its own client (built from its sealed credentials once per
process) and its own breaker (pybreaker): after `fail_max` failures in a row it opens, and calls
fail at once with CircuitOpen (so routing moves on to the next account) until `reset_timeout`
has passed; then one trial call goes through (the others still fail fast), and its success
closes the breaker again.

Only failures that say the gateway is unwell count: no answer in time, a 5xx, a connection that
could not be made. A decline is an answer, and our own mistakes are not the gateway's.

Breakers live in the process: each API server or worker judges a gateway by what it has seen
itself, and `GET /v1/gateways/status` shows the answering process's view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import pybreaker
import structlog

from strongroom.adapters.gateways.port import (
    ChargeStatus,
    Gateway,
    GatewayNotReached,
    GatewayOutcomeUnknown,
)
from strongroom.domain.clock import Clock
from strongroom.domain.model import GatewayAnswer
from strongroom.domain.routing import PaymentFacts
from strongroom.service_layer.gateway_accounts import Credentials, GatewayAccounts, Provider

log = structlog.get_logger(__name__)
T = TypeVar("T")
BUILTIN = "sandbox"  # the breaker key of the built-in sandbox (payments with no account)


class CircuitOpen(GatewayNotReached):
    """The breaker is open: the call was not made."""


def _counts(exc: BaseException) -> bool:
    return isinstance(exc, GatewayOutcomeUnknown | GatewayNotReached)


class ClockedStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker times the open state against the wall clock (`datetime.now(UTC)`). This
    storage keeps the opening instant on Strongroom's Clock and hands pybreaker the wall-clock
    instant that lies as far in the past, so the cool-down is measured on the Clock (a test's
    fake clock moves it on without waiting)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self._opened_on_clock: datetime | None = None

    @property
    def opened_at(self) -> datetime | None:
        if self._opened_on_clock is None:
            return None
        return datetime.now(UTC) - (self._clock.now() - self._opened_on_clock)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._opened_on_clock = self._clock.now()


@dataclass(frozen=True)
class BreakerView:
    key: str  # a gateway account id, or "sandbox" for the built-in one
    provider: str
    state: str  # closed | open | half-open
    failures: int  # consecutive failures counted so far


@dataclass
class Breaker:
    """pybreaker's breaker, and the lock that makes its half-open state one trial call: pybreaker
    itself lets every concurrent call through once the cool-down has passed."""

    circuit: pybreaker.CircuitBreaker
    trial: asyncio.Lock = field(default_factory=asyncio.Lock)


class Guarded:
    """A gateway behind its breaker: the port, with every call counted."""

    def __init__(self, inner: Gateway, breaker: Breaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.name = inner.name

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        circuit = self.breaker.circuit
        if circuit.current_state == pybreaker.STATE_CLOSED:
            return await self._counted(call)
        if self.breaker.trial.locked():  # a trial call is under way: the rest fail fast
            raise CircuitOpen(f"{self.name}: circuit breaker open")
        async with self.breaker.trial:
            return await self._counted(call)

    async def _counted(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            with self.breaker.circuit.calling():
                return await call()
        except pybreaker.CircuitBreakerError as exc:
            # Raised instead of the error that tripped it, or before any call when open.
            if exc.__context__ is not None and _counts(exc.__context__):
                raise exc.__context__ from None
            raise CircuitOpen(f"{self.name}: circuit breaker open") from None

    async def authorize(
        self,
        *,
        payment_method: str,
        amount: int,
        currency: str,
        capture: bool,
        idempotency_key: str,
    ) -> GatewayAnswer:
        return await self._guard(
            lambda: self.inner.authorize(
                payment_method=payment_method,
                amount=amount,
                currency=currency,
                capture=capture,
                idempotency_key=idempotency_key,
            )
        )

    async def confirm_action(
        self, *, reference: str, capture: bool, idempotency_key: str
    ) -> GatewayAnswer:
        return await self._guard(
            lambda: self.inner.confirm_action(
                reference=reference, capture=capture, idempotency_key=idempotency_key
            )
        )

    async def capture(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        return await self._guard(
            lambda: self.inner.capture(
                reference=reference, amount=amount, idempotency_key=idempotency_key
            )
        )

    async def void(self, *, reference: str, idempotency_key: str) -> GatewayAnswer:
        return await self._guard(
            lambda: self.inner.void(reference=reference, idempotency_key=idempotency_key)
        )

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        return await self._guard(
            lambda: self.inner.refund(
                reference=reference, amount=amount, idempotency_key=idempotency_key
            )
        )

    async def retrieve(self, *, reference: str) -> ChargeStatus:
        return await self._guard(lambda: self.inner.retrieve(reference=reference))


@dataclass(frozen=True)
class Candidate:
    account_id: str | None  # None: the built-in sandbox
    provider: str


class Gateways:
    def __init__(
        self,
        accounts: GatewayAccounts,
        builtin: Gateway,
        clock: Clock,
        *,
        fail_max: int,
        reset_timeout: float,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.accounts = accounts
        self.builtin = builtin  # the sandbox that serves merchants with no gateway account
        self.clock = clock
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._clients: dict[str, Gateway] = {}
        self._breakers: dict[str, Breaker] = {}

    async def facts(self, payment_method: str, currency: str, amount: int) -> PaymentFacts:
        """What routing may know of a payment: its currency and amount, and the card's country
        and brand when the token tells them (the sandbox's tokens do; others do not, so rules
        on card facts do not match them)."""
        card = getattr(self.builtin, "card_facts", None)
        known = await card(payment_method) if card is not None else None
        return PaymentFacts(
            currency=currency,
            amount=amount,
            card_country=getattr(known, "country", None),
            card_brand=getattr(known, "brand", None),
        )

    async def plan(self, merchant_id: str, livemode: bool, facts: PaymentFacts) -> list[Candidate]:
        """The accounts a new payment tries, in order. A merchant with no routing pays through
        the built-in sandbox. Reads only the routing and each account's provider: nothing is
        opened (no KMS call) on the way to a payment."""
        routing = await self.accounts.routing_for(merchant_id, livemode)
        order = routing.order(facts)
        if not order:
            return [Candidate(None, self.builtin.name)]
        providers = await self.accounts.providers(merchant_id, order)
        return [Candidate(a, providers[a]) for a in order if a in providers]

    async def get(self, merchant_id: str, account_id: str | None) -> Guarded:
        """The gateway for an account (None: the built-in sandbox), behind its breaker."""
        if account_id is None:
            return Guarded(self.builtin, self._breaker(BUILTIN))
        client = self._clients.get(account_id)
        if client is None:
            creds = await self.accounts.credentials(merchant_id, account_id)
            client = self._clients.setdefault(account_id, self._client(creds))
        return Guarded(client, self._breaker(account_id))

    async def aclose(self) -> None:
        """Close the clients that hold connections (the Stripe SDK's HTTP client)."""
        for client in self._clients.values():
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()

    def status(self, keys: Mapping[str, str]) -> list[BreakerView]:
        """The breakers of these accounts (key → provider) as this process sees them; one
        never used is closed."""
        return [
            BreakerView(
                key=key,
                provider=provider,
                state=str(self._breaker(key).circuit.current_state),
                failures=int(self._breaker(key).circuit.fail_counter),
            )
            for key, provider in keys.items()
        ]

    def _breaker(self, key: str) -> Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:

            def neutral(exc: BaseException) -> bool:
                """pybreaker counts an excluded error as a success. Our own errors are; a
                cancelled trial call is not (it proved nothing), so it counts as a failure
                and the breaker opens again rather than closing on no evidence."""
                if isinstance(exc, asyncio.CancelledError):
                    return circuit.current_state != pybreaker.STATE_HALF_OPEN
                return not _counts(exc)

            circuit = pybreaker.CircuitBreaker(
                fail_max=self.fail_max,
                reset_timeout=self.reset_timeout,
                exclude=[neutral],
                state_storage=ClockedStorage(self.clock),
                name=key,
            )
            breaker = self._breakers[key] = Breaker(circuit)
        return breaker

    def _client(self, creds: Credentials) -> Gateway:
        fields = creds.fields
        match creds.account.provider:
            case Provider.SANDBOX:
                return self.builtin
            case Provider.STRIPE:
                from strongroom.adapters.gateways.stripe import StripeGateway

                return StripeGateway(
                    secret_key=fields["secret_key"],
                    base_url=fields.get("base_url"),
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                )
            case Provider.BRAINTREE:
                from strongroom.adapters.gateways.braintree import BraintreeGateway

                return BraintreeGateway(
                    merchant_id=fields["merchant_id"],
                    public_key=fields["public_key"],
                    private_key=fields["private_key"],
                    environment=fields["environment"],
                    base_url=fields.get("base_url"),
                    merchant_accounts=fields.get("merchant_accounts") or {},
                    timeout=self.read_timeout,
                )
