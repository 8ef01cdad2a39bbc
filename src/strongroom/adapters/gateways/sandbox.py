"""The sandbox gateway: a processor that runs inside Strongroom, for development and tests.

It keeps its own record of charges (tables `sandbox_*`, in its own transactions), honours
idempotency keys the way a real processor does, sends 3-D Secure challenges to a page it serves,
and can be told to fail (time out before or after charging, answer 5xx) so that recovery can be
tested. Its test tokens and test card numbers are Stripe's.

It also tokenizes: its hosted card fields post one of those test card numbers to its
tokenization endpoint, and `tokenize` keeps a `tok_…` that behaves as the matching test token,
with only what may be shown (brand, last four, country, expiry). The number is never stored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strongroom.adapters.db.engine import autocommit
from strongroom.adapters.db.tables import sandbox_charges, sandbox_requests, sandbox_tokens
from strongroom.adapters.gateways.port import (
    ChargeState,
    ChargeStatus,
    GatewayServerError,
    GatewayTimeout,
)
from strongroom.domain.clock import Clock
from strongroom.domain.ids import new_id
from strongroom.domain.model import ActionRequired, Approved, Declined, GatewayAnswer
from strongroom.domain.pan import brand_of


class Fault(StrEnum):
    TIMEOUT_BEFORE_CHARGE = "timeout_before_charge"
    TIMEOUT_AFTER_CHARGE = "timeout_after_charge"
    SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class CardFacts:
    """What routing may know about the card behind a token; never the number."""

    brand: str
    country: str | None
    last4: str


@dataclass(frozen=True)
class _Card:
    approve: bool
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None
    three_d_secure: bool = False
    facts: CardFacts = CardFacts("visa", "US", "4242")


TEST_TOKENS: dict[str, _Card] = {
    "tok_visa": _Card(approve=True),
    "tok_mastercard": _Card(approve=True, facts=CardFacts("mastercard", "US", "4444")),
    "tok_chargeDeclined": _Card(
        approve=False,
        code="card_declined",
        decline_code="generic_decline",
        message="Your card was declined.",
        facts=CardFacts("visa", "US", "0002"),
    ),
    "tok_chargeDeclinedInsufficientFunds": _Card(
        approve=False,
        code="card_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
        facts=CardFacts("visa", "US", "9995"),
    ),
    "tok_threeDSecureRequired": _Card(
        approve=True, three_d_secure=True, facts=CardFacts("visa", "US", "3220")
    ),
}


@dataclass(frozen=True)
class SandboxCard:
    """A test card number's behaviour (the test token it charges as) and issuing country."""

    behaves_as: str
    country: str = "US"


# Stripe's published test card numbers. Any other number is refused at tokenization: the
# sandbox charges test cards only.
TEST_CARDS: dict[str, SandboxCard] = {
    "4242424242424242": SandboxCard("tok_visa"),
    "5555555555554444": SandboxCard("tok_mastercard"),
    "2223003122003222": SandboxCard("tok_mastercard"),
    "4000002500003155": SandboxCard("tok_threeDSecureRequired"),
    "4000000000003220": SandboxCard("tok_threeDSecureRequired"),
    "4000000000000002": SandboxCard("tok_chargeDeclined"),
    "4000000000009995": SandboxCard("tok_chargeDeclinedInsufficientFunds"),
    # Cards issued elsewhere, for routing by country.
    "4000002500000003": SandboxCard("tok_visa", "FR"),
    "4000000760000002": SandboxCard("tok_visa", "BR"),
    "4000008260000000": SandboxCard("tok_visa", "GB"),
    "4000001240000000": SandboxCard("tok_visa", "CA"),
}


@dataclass(frozen=True)
class CardToken:
    """A card tokenized by the hosted fields, as stored: no number, no security code."""

    id: str
    merchant_id: str
    behaves_as: str
    brand: str
    last4: str
    country: str | None
    exp_month: int
    exp_year: int
    created_at: datetime

    @property
    def facts(self) -> CardFacts:
        return CardFacts(self.brand, self.country, self.last4)


# The sandbox's own charge statuses, in the port's terms.
_STATES = {
    "requires_action": ChargeState.REQUIRES_ACTION,
    "authorized": ChargeState.AUTHORIZED,
    "captured": ChargeState.CAPTURED,
    "voided": ChargeState.CANCELED,
    "declined": ChargeState.FAILED,
    "failed": ChargeState.FAILED,
}

_CHARGE_BY_KEY = select(sandbox_charges).where(
    sandbox_charges.c.idempotency_key == bindparam("key")
)


class SandboxGateway:
    name = "sandbox"

    TOKEN_CACHE_LIMIT = 10_000

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        public_url: str,
        clock: Clock,
        read_engine: AsyncEngine | None = None,
    ) -> None:
        """`read_engine` (the Engines' read engine) serves token lookups, reads like any other:
        on SQLite a connection of the write engine would queue behind whatever write
        transaction is open."""
        self._engine = engine
        self._read_engine = read_engine or engine
        self._public_url = public_url.rstrip("/")
        self._clock = clock
        self._faults: deque[Fault] = deque()
        # Tokens never change once made: those seen are kept, so paying costs no lookup.
        self._tokens: dict[str, CardToken] = {}
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._insert_charge = (
            insert(sandbox_charges)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(*sandbox_charges.c)
        )

    # --- test controls -------------------------------------------------------------------------
    def inject(self, fault: Fault, times: int = 1) -> None:
        """Make the next `times` calls fail this way."""
        self._faults.extend([fault] * times)

    # --- the port ------------------------------------------------------------------------------
    async def authorize(
        self,
        *,
        payment_method: str,
        amount: int,
        currency: str,
        capture: bool,
        idempotency_key: str,
    ) -> GatewayAnswer:
        """One INSERT … ON CONFLICT on the key: a retry finds the charge the first call made.
        The answer is derived from the charge's fixed columns, so a replay gives the first
        answer even after the charge has moved on (captured, voided, challenge answered)."""
        self._maybe_fail_before()
        card = await self._behaviour(payment_method)
        if card is None:  # nothing is recorded, so the answer is the same on every retry
            return Declined(
                None,
                "payment_method_invalid",
                None,
                # The token is not echoed: a careless caller may have sent a card number.
                "No such payment method; use a sandbox test token such as tok_visa.",
            )
        if not card.approve:
            status = "declined"
        elif card.three_d_secure:
            status = "requires_action"
        else:
            status = "captured" if capture else "authorized"
        values = {
            "id": new_id("ch"),
            "idempotency_key": idempotency_key,
            "payment_method": payment_method,
            "amount": amount,
            "currency": currency,
            "status": status,
            "amount_captured": amount if status == "captured" else 0,
            "amount_refunded": 0,
            "capture": capture,
            "challenge": "pending" if status == "requires_action" else None,
            "created_at": self._clock.now(),
        }
        async with autocommit(self._engine) as conn:
            row = (await conn.execute(self._insert_charge, values)).first()
            if row is None:
                row = (await conn.execute(_CHARGE_BY_KEY, {"key": idempotency_key})).one()
        if row.payment_method != payment_method:  # the key was first used with another card
            card = await self._known_behaviour(row.payment_method)
        self._maybe_fail_after()
        return self._authorization_answer(row, card)

    def _authorization_answer(self, row: Any, card: _Card) -> GatewayAnswer:
        if not card.approve:
            assert card.code is not None
            assert card.message is not None
            return Declined(row.id, card.code, card.decline_code, card.message)
        if row.challenge is not None:
            return ActionRequired(row.id, f"{self._public_url}/sandbox/3ds/{row.id}")
        return Approved(row.id, captured=bool(row.capture))

    async def confirm_action(
        self, *, reference: str, capture: bool, idempotency_key: str
    ) -> GatewayAnswer:
        async def finish(conn: AsyncConnection) -> GatewayAnswer:
            row = await self._charge(conn, reference)
            if row is None or row.status != "requires_action":
                return Declined(reference, "charge_not_actionable", None, "Nothing to confirm.")
            if row.challenge == "pending":
                return ActionRequired(reference, f"{self._public_url}/sandbox/3ds/{reference}")
            if row.challenge == "failed":
                await self._set(conn, reference, status="failed")
                return Declined(
                    reference,
                    "payment_intent_authentication_failure",
                    None,
                    "The customer failed 3-D Secure authentication.",
                )
            status = "captured" if row.capture else "authorized"
            await self._set(
                conn,
                reference,
                status=status,
                amount_captured=row.amount if row.capture else 0,
            )
            return Approved(reference, captured=bool(row.capture))

        return await self._idempotent(idempotency_key, "confirm_action", finish)

    async def capture(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        async def do(conn: AsyncConnection) -> GatewayAnswer:
            row = await self._charge(conn, reference)
            if row is None or row.status != "authorized" or amount > row.amount:
                return Declined(reference, "charge_not_capturable", None, "Cannot capture.")
            await self._set(conn, reference, status="captured", amount_captured=amount)
            return Approved(reference, captured=True)

        return await self._idempotent(idempotency_key, "capture", do)

    async def void(self, *, reference: str, idempotency_key: str) -> GatewayAnswer:
        async def do(conn: AsyncConnection) -> GatewayAnswer:
            row = await self._charge(conn, reference)
            if row is None or row.status != "authorized":
                return Declined(reference, "charge_not_voidable", None, "Cannot void.")
            await self._set(conn, reference, status="voided")
            return Approved(reference)

        return await self._idempotent(idempotency_key, "void", do)

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        async def do(conn: AsyncConnection) -> GatewayAnswer:
            row = await self._charge(conn, reference)
            if row is None or row.amount_refunded + amount > row.amount_captured:
                return Declined(reference, "refund_exceeds_charge", None, "Cannot refund.")
            await self._set(conn, reference, amount_refunded=row.amount_refunded + amount)
            return Approved(new_id("rf"))

        return await self._idempotent(idempotency_key, "refund", do)

    async def retrieve(self, *, reference: str) -> ChargeStatus:
        self._maybe_fail_before()
        async with self._engine.connect() as conn:
            row = await self._charge(conn, reference, lock=False)
        if row is None:
            raise LookupError(f"sandbox: no charge {reference!r}")
        state = _STATES[row.status]
        decline = None
        if state is ChargeState.FAILED:
            answer = self._authorization_answer(
                row, await self._known_behaviour(row.payment_method)
            )
            decline = answer if isinstance(answer, Declined) else None
            if decline is None:  # approved card, failed challenge
                decline = Declined(
                    row.id,
                    "payment_intent_authentication_failure",
                    None,
                    "The customer failed 3-D Secure authentication.",
                )
        return ChargeStatus(
            reference=row.id,
            state=state,
            amount_captured=row.amount_captured,
            amount_refunded=row.amount_refunded,
            decline=decline,
        )

    # --- tokenization (the hosted fields' side) ------------------------------------------------
    async def tokenize(
        self, *, merchant_id: str, number: str, exp_month: int, exp_year: int
    ) -> CardToken | None:
        """Keep a token for one of the sandbox's test card numbers (digits only, checked by the
        caller); None for any other number, which the sandbox cannot charge. Only the brand,
        last four, country and expiry are stored."""
        card = TEST_CARDS.get(number)
        if card is None:
            return None
        token = CardToken(
            id=new_id("tok"),
            merchant_id=merchant_id,
            behaves_as=card.behaves_as,
            brand=brand_of(number) or "unknown",
            last4=number[-4:],
            country=card.country,
            exp_month=exp_month,
            exp_year=exp_year,
            created_at=self._clock.now(),
        )
        async with autocommit(self._engine) as conn:
            await conn.execute(sandbox_tokens.insert().values(**asdict(token)))
        return self._remember(token)

    async def token(self, token_id: str) -> CardToken | None:
        """A token the hosted fields made, or None (the fixed test tokens are not rows)."""
        if token_id in TEST_TOKENS or not token_id.startswith("tok_"):
            return None
        known = self._tokens.get(token_id)
        if known is not None:
            return known
        async with self._read_engine.connect() as conn:
            row = (
                await conn.execute(select(sandbox_tokens).where(sandbox_tokens.c.id == token_id))
            ).first()
        return self._remember(CardToken(**row._mapping)) if row is not None else None

    def _remember(self, token: CardToken) -> CardToken:
        if len(self._tokens) >= self.TOKEN_CACHE_LIMIT:
            self._tokens.clear()
        self._tokens[token.id] = token
        return token

    async def card_facts(self, token: str) -> CardFacts | None:
        """Brand, country and last four of the card behind a token (a fixed test token or one
        the hosted fields made), for routing; None for a token the sandbox does not know."""
        fixed = TEST_TOKENS.get(token)
        if fixed is not None:
            return fixed.facts
        made = await self.token(token)
        return made.facts if made is not None else None

    # --- the customer's side of 3-D Secure -----------------------------------------------------
    async def charge(self, charge_id: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            row = await self._charge(conn, charge_id, lock=False)
            return dict(row._mapping) if row is not None else None

    async def answer_challenge(self, charge_id: str, *, succeeded: bool) -> bool:
        """Record the customer's answer; False when there is no pending challenge."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(sandbox_charges)
                .where(sandbox_charges.c.id == charge_id, sandbox_charges.c.challenge == "pending")
                .values(challenge="succeeded" if succeeded else "failed")
            )
            return bool(result.rowcount)

    async def list_charges(self) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(sandbox_charges).order_by(sandbox_charges.c.created_at)
            )
            return [dict(r._mapping) for r in rows]

    # --- internals -----------------------------------------------------------------------------
    async def _behaviour(self, payment_method: str) -> _Card | None:
        """How a payment method charges: a fixed test token's own behaviour, or that of the
        test token a hosted-fields token behaves as (looked up by its random id alone: the port
        carries no merchant)."""
        fixed = TEST_TOKENS.get(payment_method)
        if fixed is not None:
            return fixed
        made = await self.token(payment_method)
        return TEST_TOKENS[made.behaves_as] if made is not None else None

    async def _known_behaviour(self, payment_method: str) -> _Card:
        """The behaviour of a payment method a charge was made with (so it resolved then)."""
        card = await self._behaviour(payment_method)
        if card is None:
            raise LookupError("sandbox: a charge's payment method is no longer known")
        return card

    async def _idempotent(
        self,
        key: str,
        operation: str,
        act: Callable[[AsyncConnection], Awaitable[GatewayAnswer]],
    ) -> GatewayAnswer:
        self._maybe_fail_before()
        try:
            answer = await self._once(key, operation, act)
        except IntegrityError:
            # A concurrent call with the same key stored its answer first; ours rolled back.
            answer = await self._once(key, operation, act)
        self._maybe_fail_after()
        return answer

    async def _once(
        self,
        key: str,
        operation: str,
        act: Callable[[AsyncConnection], Awaitable[GatewayAnswer]],
    ) -> GatewayAnswer:
        async with self._engine.begin() as conn:
            stored = (
                await conn.execute(
                    select(sandbox_requests.c.operation, sandbox_requests.c.response).where(
                        sandbox_requests.c.idempotency_key == key
                    )
                )
            ).first()
            if stored is not None:
                if stored.operation != operation:
                    raise ValueError(f"sandbox: key {key!r} was used for {stored.operation}")
                return _decode(stored.response)
            answer = await act(conn)
            await conn.execute(
                sandbox_requests.insert().values(
                    idempotency_key=key,
                    operation=operation,
                    response=_encode(answer),
                    created_at=self._clock.now(),
                )
            )
            return answer

    def _maybe_fail_before(self) -> None:
        """Apply an injected fault that strikes before the processor acts. A fault that strikes
        after it is kept for `_maybe_fail_after`."""
        if not self._faults:
            return
        if self._faults[0] is Fault.TIMEOUT_BEFORE_CHARGE:
            self._faults.popleft()
            raise GatewayTimeout("sandbox: timed out before charging")
        if self._faults[0] is Fault.SERVER_ERROR:
            self._faults.popleft()
            raise GatewayServerError("sandbox: 500 Internal Server Error")

    def _maybe_fail_after(self) -> None:
        if self._faults and self._faults[0] is Fault.TIMEOUT_AFTER_CHARGE:
            self._faults.popleft()
            raise GatewayTimeout("sandbox: timed out after charging")

    @staticmethod
    async def _charge(conn: AsyncConnection, charge_id: str, *, lock: bool = True) -> Any:
        """The charge row, locked by default: every change is read-modify-write, and two
        concurrent refunds must not both add to the same old amount."""
        query = select(sandbox_charges).where(sandbox_charges.c.id == charge_id)
        return (await conn.execute(query.with_for_update() if lock else query)).first()

    @staticmethod
    async def _set(conn: AsyncConnection, charge_id: str, **values: Any) -> None:
        await conn.execute(
            update(sandbox_charges).where(sandbox_charges.c.id == charge_id).values(**values)
        )


def _encode(answer: GatewayAnswer) -> dict[str, Any]:
    match answer:
        case Approved():
            return {"type": "approved", "reference": answer.reference, "captured": answer.captured}
        case Declined():
            return {
                "type": "declined",
                "reference": answer.reference,
                "code": answer.code,
                "decline_code": answer.decline_code,
                "message": answer.message,
            }
        case ActionRequired():
            return {"type": "action_required", "reference": answer.reference, "url": answer.url}


def _decode(data: dict[str, Any]) -> GatewayAnswer:
    match data["type"]:
        case "approved":
            return Approved(data["reference"], captured=data["captured"])
        case "declined":
            return Declined(data["reference"], data["code"], data["decline_code"], data["message"])
        case _:
            return ActionRequired(data["reference"], data["url"])
