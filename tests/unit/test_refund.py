"""Refunds: reservations on the intent can never add up to more than was received, a failed
refund gives its reservation back, and a Refund applies its gateway answer once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.domain import ledger
from strongroom.domain.errors import IllegalTransition, InvalidRequest
from strongroom.domain.model import (
    ActionRequired,
    Approved,
    CaptureMethod,
    Declined,
    PaymentIntent,
    PIStatus,
    Refund,
    RefundStatus,
)
from strongroom.domain.money import Money

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def succeeded(amount: int = 1000, *, received: int | None = None) -> PaymentIntent:
    """A succeeded intent of `amount`, of which `received` was captured (default: all)."""
    pi = PaymentIntent(
        id="pi_test",
        merchant_id="acct_test",
        amount=amount,
        currency="usd",
        status=PIStatus.REQUIRES_CONFIRMATION,
        capture_method=CaptureMethod.MANUAL,
        livemode=False,
        created_at=NOW,
        payment_method="tok_visa",
    )
    pi.begin_confirm(None)
    pi.apply_authorization(Approved("ch_1", captured=False))
    pi.apply_capture(pi.begin_capture(received))
    assert pi.status is PIStatus.SUCCEEDED
    return pi


def pending_refund(amount: int = 400) -> Refund:
    return Refund(
        id="re_test",
        merchant_id="acct_test",
        payment_intent_id="pi_test",
        amount=amount,
        currency="usd",
        status=RefundStatus.PENDING,
        livemode=False,
        created_at=NOW,
    )


# --- reservations ---------------------------------------------------------------------------


def test_reserve_without_an_amount_takes_everything_left() -> None:
    pi = succeeded(1000)
    assert pi.reserve_refund(300) == 300

    assert pi.reserve_refund(None) == 700
    assert pi.amount_refunded == 1000


def test_a_fully_refunded_intent_refuses_another_refund() -> None:
    pi = succeeded(1000)
    pi.reserve_refund(None)

    with pytest.raises(InvalidRequest) as caught:
        pi.reserve_refund(1)

    assert caught.value.code == "charge_already_refunded"
    assert pi.amount_refunded == 1000


def test_a_refund_beyond_what_is_left_is_refused_and_reserves_nothing() -> None:
    pi = succeeded(1000)
    pi.reserve_refund(600)

    with pytest.raises(InvalidRequest) as caught:
        pi.reserve_refund(401)

    assert caught.value.code == "amount_too_large"
    assert caught.value.param == "amount"
    assert pi.amount_refunded == 600
    assert pi.reserve_refund(400) == 400


def test_refunds_are_bounded_by_the_amount_received_not_the_amount_authorized() -> None:
    pi = succeeded(1000, received=250)

    with pytest.raises(InvalidRequest):
        pi.reserve_refund(251)
    assert pi.reserve_refund(None) == 250


def test_a_failed_refund_gives_its_reservation_back() -> None:
    pi = succeeded(1000)
    pi.reserve_refund(700)

    pi.release_refund(700)

    assert pi.amount_refunded == 0
    assert pi.reserve_refund(None) == 1000


@pytest.mark.parametrize("status", [s for s in PIStatus if s is not PIStatus.SUCCEEDED])
def test_only_a_succeeded_intent_can_be_refunded(status: PIStatus) -> None:
    pi = succeeded(1000)
    pi.status = status  # the refund check reads nothing but the status

    with pytest.raises(IllegalTransition) as caught:
        pi.reserve_refund(100)

    assert caught.value.status == status
    assert str(status) in caught.value.message
    assert pi.amount_refunded == 0


def test_refunding_an_intent_leaves_it_succeeded() -> None:
    pi = succeeded(1000)
    pi.reserve_refund(None)

    assert pi.status is PIStatus.SUCCEEDED
    assert pi.amount_received == 1000


@given(
    st.integers(min_value=1, max_value=10**6),
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(min_value=1, max_value=2 * 10**6)),
            st.booleans(),  # whether the gateway then fails the refund
        ),
        max_size=30,
    ),
)
def test_reservations_never_add_up_to_more_than_was_received(
    received: int, attempts: list[tuple[int | None, bool]]
) -> None:
    pi = succeeded(received)
    outstanding = 0  # reservations that did not fail
    for amount, fails in attempts:
        left = received - outstanding
        try:
            reserved = pi.reserve_refund(amount)
        except InvalidRequest:
            assert left == 0 or (amount is not None and amount > left)
        else:
            assert reserved == (left if amount is None else amount)
            if fails:
                pi.release_refund(reserved)
            else:
                outstanding += reserved
        assert pi.amount_refunded == outstanding
        assert 0 <= pi.amount_refunded <= pi.amount_received


@pytest.mark.parametrize("amount", [0, -500])
def test_reserve_refund_refuses_a_non_positive_amount(amount: int) -> None:
    pi = succeeded(1000)

    with pytest.raises(InvalidRequest):
        pi.reserve_refund(amount)
    assert pi.amount_refunded == 0


# --- applying the gateway's answer ------------------------------------------------------------


def test_an_approved_refund_succeeds_and_posts_the_refund() -> None:
    refund = pending_refund(400)

    txs = refund.apply(Approved("rf_1"))

    assert refund.status is RefundStatus.SUCCEEDED
    assert refund.gateway_reference == "rf_1"
    assert refund.failure_reason is None
    assert txs == [ledger.refund("pi_test", "re_test", Money(400, "usd"))]
    assert txs[0].refund_id == "re_test"


def test_a_declined_refund_fails_with_the_reason_and_posts_nothing() -> None:
    refund = pending_refund(400)

    txs = refund.apply(Declined("ch_1", "refund_exceeds_charge", None, "Cannot refund."))

    assert txs == []
    assert refund.status is RefundStatus.FAILED
    assert refund.failure_reason == "refund_exceeds_charge"
    assert refund.gateway_reference is None


@pytest.mark.parametrize(
    "status", [RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.CANCELED]
)
def test_a_finished_refund_refuses_another_answer(status: RefundStatus) -> None:
    refund = pending_refund()
    refund.status = status

    with pytest.raises(IllegalTransition) as caught:
        refund.apply(Approved("rf_2"))

    assert caught.value.status == status
    assert caught.value.code == "refund_unexpected_state"
    assert str(status) in caught.value.message
    assert refund.status is status
    assert refund.gateway_reference is None


def test_a_refund_never_requires_customer_action() -> None:
    refund = pending_refund()

    with pytest.raises(ValueError, match="never requires customer action"):
        refund.apply(ActionRequired("rf_1", "https://example.test"))
