"""The ledger's acceptance property: random sequences of payment operations, driven through the
real service layer on SQLite and PostgreSQL, leave every ledger transaction summing to zero per
currency and the balances equal to what the payments and the gateway say.

Each hypothesis example works for a fresh merchant, so examples sharing one database cannot see
each other's rows. Every operation's outcome is also checked against what Stripe's model
predicts from the intent's state before it: a refused operation must change nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.domain.errors import (
    CardError,
    IllegalTransition,
    InvalidRequest,
    StrongroomError,
)
from strongroom.domain.ledger import Account
from strongroom.domain.model import (
    CANCELABLE,
    CONFIRMABLE,
    CaptureMethod,
    OperationStatus,
    PaymentIntent,
    PIStatus,
    Refund,
    RefundStatus,
)
from strongroom.service_layer import commands as c

CURRENCIES = ["usd", "jpy", "kwd", "eur"]
TOKENS = ["tok_visa", "tok_chargeDeclined", "tok_threeDSecureRequired"]
PAYMENT_METHODS = ["tok_visa", *TOKENS, None]  # approvals twice as likely as anything else
REASONS = [None, "duplicate", "fraudulent", "requested_by_customer", "abandoned"]
# The statuses each operation is meant for; `create` is meant for any time. `create` comes last
# because hypothesis favours the first choice, and a run of creates goes nowhere.
FITTING: dict[str, Collection[PIStatus]] = {
    "confirm": CONFIRMABLE,
    "capture": {PIStatus.REQUIRES_CAPTURE},
    "refund": {PIStatus.SUCCEEDED},
    "answer_challenge": {PIStatus.REQUIRES_ACTION},
    "cancel": CANCELABLE,
    "create": set(PIStatus),
}
usually = st.sampled_from([True, True, True, False])

T = TypeVar("T")


@dataclass
class World:
    container: Container
    caller: c.Caller
    pis: list[str] = field(default_factory=list)

    @property
    def merchant_id(self) -> str:
        return self.caller.merchant_id

    async def pi(self, pi_id: str) -> PaymentIntent:
        return await self.container.payments.get_payment_intent(self.caller, pi_id)

    async def statuses(self) -> dict[str, PIStatus]:
        pis = t.payment_intents
        async with self.container.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(pis.c.id, pis.c.status).where(pis.c.merchant_id == self.merchant_id)
            )
            return {pi_id: PIStatus(status) for pi_id, status in rows}

    async def pick(self, data: st.DataObject, fitting: Collection[PIStatus]) -> str:
        """An intent, usually one whose status allows the operation, so that random sequences
        reach deep states; sometimes any intent, so that refusals are exercised too."""
        statuses = await self.statuses()
        # In creation order: ids are random, so any other order would make draws unrepeatable.
        good = [p for p in self.pis if statuses[p] in fitting]
        prefer_fitting: bool = bool(good) and data.draw(usually, label="fitting")
        return data.draw(st.sampled_from(good if prefer_fitting else self.pis), label="pi")

    async def refund_count(self) -> int:
        async with self.container.uow.reading() as repo:
            query = select(func.count()).where(t.refunds.c.merchant_id == self.merchant_id)
            return int((await repo.conn.execute(query)).scalar_one())

    async def pi_count(self) -> int:
        async with self.container.uow.reading() as repo:
            query = select(func.count()).where(t.payment_intents.c.merchant_id == self.merchant_id)
            return int((await repo.conn.execute(query)).scalar_one())


async def attempt(call: Awaitable[T]) -> T | StrongroomError:
    """Run a service call; a deliberate domain error is an outcome, anything else fails."""
    try:
        outcome: T | StrongroomError = await call
    except StrongroomError as exc:
        outcome = exc
    # Shown by --hypothesis-show-statistics: which outcomes the examples reached.
    event(f"outcome: {type(outcome).__name__} {getattr(outcome, 'code', '')}".strip())
    return outcome


def assert_refused(outcome: object, kind: type[StrongroomError], code: str | None = None) -> None:
    assert isinstance(outcome, kind), f"expected {kind.__name__}, got {outcome!r}"
    if code is not None:
        assert outcome.code == code


def authorized_status(pi: PaymentIntent) -> PIStatus:
    manual = pi.capture_method is CaptureMethod.MANUAL
    return PIStatus.REQUIRES_CAPTURE if manual else PIStatus.SUCCEEDED


def assert_authorized(pi: PaymentIntent) -> None:
    assert pi.status is authorized_status(pi)
    if pi.status is PIStatus.SUCCEEDED:
        assert (pi.amount_received, pi.amount_capturable) == (pi.amount, 0)
    else:
        assert (pi.amount_received, pi.amount_capturable) == (0, pi.amount)


# --- operations ------------------------------------------------------------------------------


async def create(w: World, data: st.DataObject) -> None:
    validity = data.draw(st.sampled_from(["ok"] * 8 + ["zero", "too_large"]), label="validity")
    if validity == "ok":
        amount = data.draw(st.integers(min_value=1, max_value=10**6), label="amount")
    else:
        amount = 0 if validity == "zero" else w.container.settings.max_amount + 1
    token = data.draw(st.sampled_from(PAYMENT_METHODS), label="payment_method")
    cmd = c.CreatePaymentIntent(
        amount=amount,
        currency=data.draw(st.sampled_from(CURRENCIES), label="currency"),
        payment_method=token,
        capture_method=data.draw(st.sampled_from(list(CaptureMethod)), label="capture_method"),
        confirm=data.draw(st.booleans(), label="confirm"),
    )
    count = await w.pi_count()

    outcome = await attempt(w.container.payments.create_payment_intent(w.caller, cmd, None))

    if validity != "ok" or (cmd.confirm and token is None):
        code = {"zero": "amount_too_small", "too_large": "amount_too_large"}.get(
            validity, "parameter_missing"
        )
        assert_refused(outcome, InvalidRequest, code)
        assert await w.pi_count() == count, "a refused create must write nothing"
        return
    if cmd.confirm and token == "tok_chargeDeclined":
        assert_refused(outcome, CardError, "card_declined")
        assert isinstance(outcome, CardError)
        assert outcome.payment_intent_id is not None
        pi = await w.pi(outcome.payment_intent_id)
        assert pi.status is PIStatus.REQUIRES_PAYMENT_METHOD
        assert pi.last_payment_error is not None
    else:
        assert isinstance(outcome, PaymentIntent), outcome
        pi = outcome
        if not cmd.confirm:
            expected = PIStatus.REQUIRES_CONFIRMATION if token else PIStatus.REQUIRES_PAYMENT_METHOD
            assert pi.status is expected
        elif token == "tok_threeDSecureRequired":
            assert pi.status is PIStatus.REQUIRES_ACTION
            assert pi.next_action is not None
        else:
            assert_authorized(pi)
    assert (pi.amount, pi.currency) == (cmd.amount, cmd.currency)
    w.pis.append(pi.id)


async def confirm(w: World, data: st.DataObject) -> None:
    pi_id = await w.pick(data, CONFIRMABLE)
    await confirm_and_check(w, pi_id, data.draw(st.sampled_from(PAYMENT_METHODS), label="pm"))


async def confirm_and_check(w: World, pi_id: str, token: str | None) -> None:
    before = await w.pi(pi_id)
    challenge = None
    if before.status is PIStatus.REQUIRES_ACTION:
        assert before.gateway_reference is not None
        charge = await w.container.sandbox.charge(before.gateway_reference)
        assert charge is not None
        challenge = charge["challenge"]

    outcome = await attempt(
        w.container.payments.confirm(w.caller, c.ConfirmPaymentIntent(pi_id, token), None)
    )
    after = await w.pi(pi_id)

    if before.status not in CONFIRMABLE or (
        before.status is PIStatus.REQUIRES_ACTION and token is not None
    ):
        assert_refused(outcome, IllegalTransition)
        assert isinstance(outcome, IllegalTransition)
        assert outcome.status == before.status
        assert after == before
        return
    if before.status is PIStatus.REQUIRES_ACTION:  # resuming a 3-D Secure challenge
        if challenge == "pending":
            assert isinstance(outcome, PaymentIntent), outcome
            assert after.status is PIStatus.REQUIRES_ACTION
        elif challenge == "failed":
            assert_refused(outcome, CardError, "payment_intent_authentication_failure")
            assert after.status is PIStatus.REQUIRES_PAYMENT_METHOD
        else:
            assert isinstance(outcome, PaymentIntent), outcome
            assert_authorized(after)
        return
    method = token or before.payment_method
    if method is None:
        assert_refused(outcome, InvalidRequest, "parameter_missing")
        assert after == before
    elif method == "tok_chargeDeclined":
        assert_refused(outcome, CardError, "card_declined")
        assert after.status is PIStatus.REQUIRES_PAYMENT_METHOD
        assert after.payment_method is None
        assert after.last_payment_error is not None
        assert after.last_payment_error["payment_method"] == method
    elif method == "tok_threeDSecureRequired":
        assert isinstance(outcome, PaymentIntent), outcome
        assert after.status is PIStatus.REQUIRES_ACTION
    else:
        assert isinstance(outcome, PaymentIntent), outcome
        assert_authorized(after)


async def answer_challenge(w: World, data: st.DataObject) -> None:
    """The customer's side of 3-D Secure: pass or fail the challenge of a waiting intent."""
    waiting = [pi for pi in [await w.pi(p) for p in w.pis] if pi.status is PIStatus.REQUIRES_ACTION]
    if not waiting:
        return
    pi = data.draw(st.sampled_from(waiting), label="pi")
    assert pi.gateway_reference is not None
    charge = await w.container.sandbox.charge(pi.gateway_reference)
    assert charge is not None

    answered = await w.container.sandbox.answer_challenge(
        pi.gateway_reference, succeeded=data.draw(st.booleans(), label="passes")
    )

    assert answered == (charge["challenge"] == "pending")
    assert await w.pi(pi.id) == pi, "the intent changes only when it is confirmed again"
    if data.draw(usually, label="customer returns"):  # the merchant's page confirms again
        await confirm_and_check(w, pi.id, None)


async def draw_amount(data: st.DataObject, kind: str, available: int) -> int | None:
    """None (all of it), some of what is available, zero, or more than is available."""
    if kind == "all":
        return None
    if kind == "part":
        return data.draw(st.integers(1, max(available, 1)), label="amount")
    if kind == "zero":
        return 0
    return available + data.draw(st.integers(1, 10**6), label="excess")


async def capture(w: World, data: st.DataObject) -> None:
    pi_id = await w.pick(data, {PIStatus.REQUIRES_CAPTURE})
    before = await w.pi(pi_id)
    capturable = before.amount_capturable
    kind = data.draw(st.sampled_from(["all", "part", "part", "zero", "over"]), label="kind")
    amount = await draw_amount(data, kind, capturable)

    outcome = await attempt(
        w.container.payments.capture(w.caller, c.CapturePaymentIntent(pi_id, amount), None)
    )
    after = await w.pi(pi_id)

    if before.status is not PIStatus.REQUIRES_CAPTURE:
        assert_refused(outcome, IllegalTransition)
        assert isinstance(outcome, IllegalTransition)
        assert outcome.status == before.status
        assert after == before
    elif kind in ("zero", "over"):
        code = "amount_too_small" if kind == "zero" else "amount_too_large"
        assert_refused(outcome, InvalidRequest, code)
        assert after == before
    else:
        assert isinstance(outcome, PaymentIntent), outcome
        assert after.status is PIStatus.SUCCEEDED
        assert after.amount_received == (capturable if amount is None else amount)
        assert after.amount_capturable == 0


async def cancel(w: World, data: st.DataObject) -> None:
    pi_id = await w.pick(data, CANCELABLE)
    reason = data.draw(st.sampled_from(REASONS), label="reason")
    before = await w.pi(pi_id)

    outcome = await attempt(
        w.container.payments.cancel(w.caller, c.CancelPaymentIntent(pi_id, reason), None)
    )
    after = await w.pi(pi_id)

    if before.status not in CANCELABLE:
        assert_refused(outcome, IllegalTransition)
        assert isinstance(outcome, IllegalTransition)
        assert outcome.status == before.status
        assert after == before
    else:
        assert isinstance(outcome, PaymentIntent), outcome
        assert after.status is PIStatus.CANCELED
        assert after.cancellation_reason == reason
        assert (after.amount_capturable, after.amount_received) == (0, 0)


async def refund(w: World, data: st.DataObject) -> None:
    pi_id = await w.pick(data, {PIStatus.SUCCEEDED})
    before = await w.pi(pi_id)
    remaining = before.amount_received - before.amount_refunded
    kind = data.draw(st.sampled_from(["all", "part", "part", "zero", "over"]), label="kind")
    amount = await draw_amount(data, kind, remaining)
    count = await w.refund_count()

    outcome = await attempt(
        w.container.payments.create_refund(
            w.caller, c.CreateRefund(payment_intent=pi_id, amount=amount), None
        )
    )
    after = await w.pi(pi_id)

    if isinstance(outcome, Refund):
        assert before.status is PIStatus.SUCCEEDED
        assert 0 < outcome.amount <= remaining
        assert outcome.amount == (remaining if amount is None else amount)
        assert outcome.status is RefundStatus.SUCCEEDED
        assert after.amount_refunded == before.amount_refunded + outcome.amount
        assert await w.refund_count() == count + 1
        return
    assert after == before, "a refused refund must change nothing"
    assert await w.refund_count() == count, "a refused refund must write nothing"
    if kind == "zero":
        assert_refused(outcome, InvalidRequest, "amount_too_small")
    elif before.status is not PIStatus.SUCCEEDED:
        assert_refused(outcome, IllegalTransition)
        assert isinstance(outcome, IllegalTransition)
        assert outcome.status == before.status
    elif remaining == 0:
        assert_refused(outcome, InvalidRequest, "charge_already_refunded")
    else:
        assert kind == "over", f"a refund of {amount} of {remaining} left was refused: {outcome}"
        assert_refused(outcome, InvalidRequest, "amount_too_large")


ACTIONS = {
    "create": create,
    "confirm": confirm,
    "answer_challenge": answer_challenge,
    "capture": capture,
    "cancel": cancel,
    "refund": refund,
}


# --- the invariants --------------------------------------------------------------------------


async def assert_ledger_matches_payments(w: World) -> None:
    m = w.merchant_id
    e, lt = t.ledger_entries, t.ledger_transactions
    async with w.container.uow.reading() as repo:
        conn = repo.conn
        # (a) every transaction balances in each currency.
        sums = (
            await conn.execute(
                select(e.c.transaction_id, e.c.currency, func.sum(e.c.amount))
                .where(e.c.merchant_id == m)
                .group_by(e.c.transaction_id, e.c.currency)
            )
        ).all()
        unbalanced = [(tx, cur, int(total)) for tx, cur, total in sums if int(total) != 0]
        assert unbalanced == [], f"unbalanced ledger transactions: {unbalanced}"
        tx_rows = (await conn.execute(select(lt).where(lt.c.merchant_id == m))).all()
        assert {row.id for row in tx_rows} == {row[0] for row in sums}, (
            "every ledger transaction has entries, and every entry a transaction"
        )

        balances = await repo.balances(m)
        per_pi_rows = (
            await conn.execute(
                select(lt.c.payment_intent_id, e.c.account, e.c.currency, func.sum(e.c.amount))
                .join(lt, lt.c.id == e.c.transaction_id)
                .where(e.c.merchant_id == m)
                .group_by(lt.c.payment_intent_id, e.c.account, e.c.currency)
            )
        ).all()
        pis = [
            await repo.get_payment_intent(m, row.id)
            for row in (
                await conn.execute(
                    select(t.payment_intents.c.id).where(t.payment_intents.c.merchant_id == m)
                )
            ).all()
        ]
        refund_rows = (
            await conn.execute(select(t.refunds).where(t.refunds.c.merchant_id == m))
        ).all()
        unfinished = (
            await conn.execute(
                select(func.count()).where(
                    t.gateway_operations.c.merchant_id == m,
                    t.gateway_operations.c.status == OperationStatus.STARTED,
                )
            )
        ).scalar_one()

    assert {pi.id for pi in pis if pi is not None} == set(w.pis)
    assert unfinished == 0, "every operation ran to completion, so none is left in flight"
    assert all(r.status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED) for r in refund_rows)
    refunded: dict[str, int] = defaultdict(int)
    for r in refund_rows:
        if r.status == RefundStatus.SUCCEEDED:
            refunded[r.payment_intent_id] += r.amount
    per_pi: dict[tuple[str, str, str], int] = {
        (pi_id, account, cur): int(total) for pi_id, account, cur, total in per_pi_rows
    }

    # (b) balances, per intent and per currency in total.
    received: dict[str, int] = defaultdict(int)
    capturable: dict[str, int] = defaultdict(int)
    for pi in pis:
        assert pi is not None
        assert pi.pending_operation_id is None
        assert pi.amount_refunded == refunded[pi.id], "no refund is pending, so none is reserved"
        assert 0 <= refunded[pi.id] <= pi.amount_received <= pi.amount
        received[pi.currency] += pi.amount_received - refunded[pi.id]
        capturable[pi.currency] += pi.amount_capturable

        def bal(account: Account, pi: PaymentIntent = pi) -> int:
            return per_pi.get((pi.id, account, pi.currency), 0)

        assert bal(Account.GATEWAY_HOLDS) == pi.amount_capturable, pi
        assert bal(Account.CUSTOMER_AUTHORIZATIONS) == -pi.amount_capturable, pi
        assert -bal(Account.MERCHANT_PAYABLE) == pi.amount_received - refunded[pi.id], pi
        assert bal(Account.GATEWAY_RECEIVABLE) == pi.amount_received - refunded[pi.id], pi
        assert all(cur == pi.currency for (p, _, cur) in per_pi if p == pi.id)

    currencies = {cur for (_, cur) in balances} | set(received) | set(capturable)
    for cur in currencies:
        payable = balances.get((Account.MERCHANT_PAYABLE, cur), 0)
        assert -payable == received[cur], cur
        assert balances.get((Account.GATEWAY_HOLDS, cur), 0) == capturable[cur], cur
        assert balances.get((Account.GATEWAY_RECEIVABLE, cur), 0) == -payable, cur
        assert sum(amount for (_, c_), amount in balances.items() if c_ == cur) == 0, cur
    assert {account for (account, _) in balances} <= set(Account)

    # (c) the gateway agrees with every intent's latest charge.
    for pi in pis:
        assert pi is not None
        if pi.gateway_reference is None:
            assert pi.amount_received == 0
            continue
        charge = await w.container.sandbox.charge(pi.gateway_reference)
        assert charge is not None
        assert (charge["amount"], charge["currency"]) == (pi.amount, pi.currency)
        assert charge["amount_captured"] == pi.amount_received, (pi, charge)
        assert charge["amount_refunded"] == refunded[pi.id], (pi, charge)
        expected_status = {
            PIStatus.SUCCEEDED: {"captured"},
            PIStatus.REQUIRES_CAPTURE: {"authorized"},
            PIStatus.REQUIRES_ACTION: {"requires_action"},
            PIStatus.CANCELED: {"voided", "requires_action"},
        }[pi.status]
        assert charge["status"] in expected_status, (pi, charge)


# --- the property ----------------------------------------------------------------------------


async def run_operations(container: Container, data: st.DataObject) -> None:
    merchant = await container.merchants.create_merchant("Property")
    w = World(container, c.Caller(merchant.id, livemode=False))
    steps = data.draw(st.integers(min_value=8, max_value=20), label="steps")
    before = await w.statuses()
    for _ in range(steps):
        # Usually an operation that some intent's status allows, so that sequences go deep.
        fitting = [op for op, fit in FITTING.items() if set(before.values()) & set(fit)]
        choices = fitting if data.draw(usually, label="fitting operation") else list(ACTIONS)
        name = data.draw(st.sampled_from(choices if w.pis else ["create"]), label="operation")
        await ACTIONS[name](w, data)
        after = await w.statuses()
        for pi_id, status in after.items():
            if before.get(pi_id) != status:
                event(f"transition: {before.get(pi_id, 'new')} -> {status}")
        before = after
    await assert_ledger_matches_payments(w)


COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(max_examples=50, **COMMON)
@given(data=st.data())
async def test_random_operations_keep_the_ledger_balanced_on_sqlite(
    container: Container, data: st.DataObject
) -> None:
    await run_operations(container, data)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
@settings(max_examples=30, **COMMON)
@given(data=st.data())
async def test_random_operations_keep_the_ledger_balanced_on_postgres(
    container: Container, data: st.DataObject
) -> None:
    await run_operations(container, data)
