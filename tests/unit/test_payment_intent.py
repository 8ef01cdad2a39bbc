"""The PaymentIntent state machine, as Stripe models it: every legal transition does what Stripe
does, every other one raises IllegalTransition naming the status and changes nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.domain import ledger
from strongroom.domain.errors import IllegalTransition, InvalidRequest
from strongroom.domain.ledger import Account, Movement
from strongroom.domain.model import (
    ActionRequired,
    Approved,
    CaptureMethod,
    Declined,
    PaymentIntent,
    PIStatus,
)
from strongroom.domain.money import Money

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
URL = "https://pay.example/3ds/ch_1"
DECLINE = Declined("ch_d", "card_declined", "generic_decline", "Your card was declined.")


def new_pi(
    *,
    amount: int = 1000,
    currency: str = "usd",
    capture_method: CaptureMethod = CaptureMethod.AUTOMATIC,
    payment_method: str | None = None,
) -> PaymentIntent:
    """A PaymentIntent as the service creates it."""
    return PaymentIntent(
        id="pi_test",
        merchant_id="acct_test",
        amount=amount,
        currency=currency,
        status=(
            PIStatus.REQUIRES_CONFIRMATION if payment_method else PIStatus.REQUIRES_PAYMENT_METHOD
        ),
        capture_method=capture_method,
        livemode=False,
        created_at=NOW,
        payment_method=payment_method,
    )


def status_of(pi: PaymentIntent) -> PIStatus:
    """The status now (a plain `pi.status` would let mypy narrow it across transitions)."""
    return pi.status


def reach(status: PIStatus, *, amount: int = 1000) -> PaymentIntent:
    """A PaymentIntent brought to `status` through legal transitions only."""
    manual = status is PIStatus.REQUIRES_CAPTURE
    pi = new_pi(
        amount=amount,
        capture_method=CaptureMethod.MANUAL if manual else CaptureMethod.AUTOMATIC,
        payment_method=None if status is PIStatus.REQUIRES_PAYMENT_METHOD else "tok_visa",
    )
    match status:
        case PIStatus.REQUIRES_PAYMENT_METHOD | PIStatus.REQUIRES_CONFIRMATION:
            pass
        case PIStatus.PROCESSING:
            pi.begin_confirm(None)
        case PIStatus.REQUIRES_ACTION:
            pi.begin_confirm(None)
            pi.apply_authorization(ActionRequired("ch_1", URL))
        case PIStatus.REQUIRES_CAPTURE:
            pi.begin_confirm(None)
            pi.apply_authorization(Approved("ch_1", captured=False))
        case PIStatus.SUCCEEDED:
            pi.begin_confirm(None)
            pi.apply_authorization(Approved("ch_1", captured=True))
        case PIStatus.CANCELED:
            pi.cancel("abandoned", NOW)
    assert pi.status is status
    return pi


# Every action a caller (or a gateway answer) can take on an intent.
ACTIONS: dict[str, Callable[[PaymentIntent], object]] = {
    "confirm": lambda pi: pi.begin_confirm("tok_visa"),
    "confirm_without_new_method": lambda pi: pi.begin_confirm(None),
    "authorize": lambda pi: pi.apply_authorization(Approved("ch_2", captured=False)),
    "authorize_and_capture": lambda pi: pi.apply_authorization(Approved("ch_2", captured=True)),
    "require_action": lambda pi: pi.apply_authorization(ActionRequired("ch_2", URL)),
    "decline": lambda pi: pi.apply_authorization(DECLINE),
    "capture": lambda pi: pi.begin_capture(None),
    "capture_part": lambda pi: pi.begin_capture(1),
    "finish_capture": lambda pi: pi.apply_capture(1),
    "cancel": lambda pi: pi.cancel("duplicate", NOW),
}

CONFIRM = {"confirm", "confirm_without_new_method"}
AUTHORIZATION = {"authorize", "authorize_and_capture", "require_action", "decline"}
CAPTURE = {"capture", "capture_part", "finish_capture"}

LEGAL: dict[PIStatus, set[str]] = {
    PIStatus.REQUIRES_PAYMENT_METHOD: {"confirm", "cancel"},
    PIStatus.REQUIRES_CONFIRMATION: CONFIRM | {"cancel"},
    # A 3-D Secure challenge is resumed, never re-confirmed with another card.
    PIStatus.REQUIRES_ACTION: {"confirm_without_new_method", "cancel"},
    PIStatus.PROCESSING: AUTHORIZATION,
    PIStatus.REQUIRES_CAPTURE: CAPTURE | {"cancel"},
    PIStatus.SUCCEEDED: set(),
    PIStatus.CANCELED: set(),
}

# Legal in this status but refused as a bad request (no payment method to confirm with); see
# test_confirm_without_any_payment_method_is_refused_and_changes_nothing.
BAD_REQUEST = {(PIStatus.REQUIRES_PAYMENT_METHOD, "confirm_without_new_method")}

ILLEGAL = [
    (status, action)
    for status in PIStatus
    for action in ACTIONS
    if action not in LEGAL[status] and (status, action) not in BAD_REQUEST
]


@pytest.mark.parametrize(("status", "action"), ILLEGAL, ids=[f"{s}-{a}" for s, a in ILLEGAL])
def test_an_illegal_transition_names_the_status_and_changes_nothing(
    status: PIStatus, action: str
) -> None:
    pi = reach(status)
    before = copy.deepcopy(pi)

    with pytest.raises(IllegalTransition) as caught:
        ACTIONS[action](pi)

    assert caught.value.status == status
    assert str(status) in caught.value.message
    assert caught.value.code == "payment_intent_unexpected_state"
    assert pi == before


@pytest.mark.parametrize(
    ("status", "action"),
    [(s, a) for s in PIStatus for a in sorted(LEGAL[s])],
)
def test_every_legal_transition_is_accepted(status: PIStatus, action: str) -> None:
    pi = reach(status)

    ACTIONS[action](pi)  # no exception


@pytest.mark.parametrize("status", [PIStatus.SUCCEEDED, PIStatus.CANCELED])
def test_terminal_statuses_refuse_every_action(status: PIStatus) -> None:
    """Refunding a succeeded intent is allowed but leaves its status alone (see test_refund)."""
    for action in ACTIONS.values():
        pi = reach(status)
        with pytest.raises(IllegalTransition) as caught:
            action(pi)
        assert caught.value.status == status
        assert pi.status is status


# --- automatic capture ------------------------------------------------------------------------


def test_automatic_capture_succeeds_in_one_step_and_posts_hold_then_capture() -> None:
    pi = new_pi(amount=1500, currency="eur")

    pi.begin_confirm("tok_visa")
    assert status_of(pi) is PIStatus.PROCESSING
    assert pi.payment_method == "tok_visa"

    txs = pi.apply_authorization(Approved("ch_1", captured=True))

    assert status_of(pi) is PIStatus.SUCCEEDED
    assert pi.amount_received == 1500
    assert pi.amount_capturable == 0
    assert pi.gateway_reference == "ch_1"
    assert pi.next_action is None
    assert txs == [
        ledger.hold("pi_test", Money(1500, "eur")),
        ledger.capture("pi_test", Money(1500, "eur")),
    ]


def test_confirm_with_a_payment_method_given_at_creation() -> None:
    pi = new_pi(payment_method="tok_mastercard")
    assert status_of(pi) is PIStatus.REQUIRES_CONFIRMATION

    pi.begin_confirm(None)

    assert status_of(pi) is PIStatus.PROCESSING
    assert pi.payment_method == "tok_mastercard"


def test_confirm_replaces_the_payment_method_when_given_one() -> None:
    pi = new_pi(payment_method="tok_mastercard")

    pi.begin_confirm("tok_visa")

    assert pi.payment_method == "tok_visa"


def test_confirm_without_any_payment_method_is_refused_and_changes_nothing() -> None:
    pi = new_pi()
    before = copy.deepcopy(pi)

    with pytest.raises(InvalidRequest) as caught:
        pi.begin_confirm(None)

    assert caught.value.code == "parameter_missing"
    assert caught.value.param == "payment_method"
    assert pi == before


# --- manual capture ---------------------------------------------------------------------------


def test_manual_capture_holds_then_captures_everything() -> None:
    pi = new_pi(amount=2000, capture_method=CaptureMethod.MANUAL)
    pi.begin_confirm("tok_visa")

    held = pi.apply_authorization(Approved("ch_1", captured=False))

    assert status_of(pi) is PIStatus.REQUIRES_CAPTURE
    assert pi.amount_capturable == 2000
    assert pi.amount_received == 0
    assert pi.gateway_reference == "ch_1"
    assert held == [ledger.hold("pi_test", Money(2000, "usd"))]

    amount = pi.begin_capture(None)
    assert amount == 2000
    assert status_of(pi) is PIStatus.REQUIRES_CAPTURE  # nothing changes until the gateway answers

    captured = pi.apply_capture(amount)

    assert status_of(pi) is PIStatus.SUCCEEDED
    assert pi.amount_received == 2000
    assert pi.amount_capturable == 0
    assert captured == [ledger.capture("pi_test", Money(2000, "usd"))]  # nothing to release


def test_partial_capture_releases_the_remainder() -> None:
    pi = reach(PIStatus.REQUIRES_CAPTURE, amount=2000)

    amount = pi.begin_capture(1500)
    txs = pi.apply_capture(amount)

    assert amount == 1500
    assert status_of(pi) is PIStatus.SUCCEEDED
    assert pi.amount_received == 1500
    assert pi.amount_capturable == 0
    assert txs == [
        ledger.capture("pi_test", Money(1500, "usd")),
        ledger.release("pi_test", Money(500, "usd")),
    ]


@given(st.integers(min_value=1, max_value=10**9), st.data())
def test_any_capture_amount_splits_the_hold_into_captured_and_released(
    authorized: int, data: st.DataObject
) -> None:
    pi = reach(PIStatus.REQUIRES_CAPTURE, amount=authorized)
    wanted = data.draw(st.integers(min_value=1, max_value=authorized), label="amount_to_capture")

    txs = pi.apply_capture(pi.begin_capture(wanted))

    captured = sum(
        p.amount
        for tx in txs
        if tx.movement is Movement.CAPTURE
        for p in tx.postings
        if p.account is Account.GATEWAY_RECEIVABLE
    )
    released = sum(
        -p.amount
        for tx in txs
        if tx.movement is Movement.RELEASE
        for p in tx.postings
        if p.account is Account.GATEWAY_HOLDS
    )
    assert captured == pi.amount_received == wanted
    assert captured + released == authorized
    assert pi.amount_capturable == 0
    holds_after = authorized + sum(
        p.amount for tx in txs for p in tx.postings if p.account is Account.GATEWAY_HOLDS
    )
    assert holds_after == 0


@pytest.mark.parametrize(
    ("amount_to_capture", "code"),
    [(0, "amount_too_small"), (-1, "amount_too_small"), (1001, "amount_too_large")],
)
def test_capture_outside_one_to_capturable_is_refused_and_changes_nothing(
    amount_to_capture: int, code: str
) -> None:
    pi = reach(PIStatus.REQUIRES_CAPTURE, amount=1000)
    before = copy.deepcopy(pi)

    with pytest.raises(InvalidRequest) as caught:
        pi.begin_capture(amount_to_capture)

    assert caught.value.code == code
    assert caught.value.param == "amount_to_capture"
    assert pi == before


# --- 3-D Secure -------------------------------------------------------------------------------


def test_requires_action_then_resume_then_succeed() -> None:
    pi = new_pi(amount=700)
    pi.begin_confirm("tok_threeDSecureRequired")

    txs = pi.apply_authorization(ActionRequired("ch_1", URL))

    assert txs == []
    assert status_of(pi) is PIStatus.REQUIRES_ACTION
    assert pi.gateway_reference == "ch_1"
    assert pi.next_action == {"type": "redirect_to_url", "redirect_to_url": {"url": URL}}
    assert pi.amount_capturable == 0
    assert pi.amount_received == 0

    pi.begin_confirm(None)  # the customer finished the challenge; resume
    assert status_of(pi) is PIStatus.PROCESSING
    assert pi.payment_method == "tok_threeDSecureRequired"

    txs = pi.apply_authorization(Approved("ch_1", captured=True))

    assert status_of(pi) is PIStatus.SUCCEEDED
    assert pi.next_action is None
    assert pi.amount_received == 700
    assert [tx.movement for tx in txs] == [Movement.AUTHORIZATION_HOLD, Movement.CAPTURE]


def test_requires_action_with_manual_capture_ends_in_requires_capture() -> None:
    pi = new_pi(amount=700, capture_method=CaptureMethod.MANUAL)
    pi.begin_confirm("tok_threeDSecureRequired")
    pi.apply_authorization(ActionRequired("ch_1", URL))
    pi.begin_confirm(None)

    pi.apply_authorization(Approved("ch_1", captured=False))

    assert status_of(pi) is PIStatus.REQUIRES_CAPTURE
    assert pi.amount_capturable == 700
    assert pi.next_action is None


def test_a_still_pending_challenge_keeps_requiring_action() -> None:
    pi = reach(PIStatus.REQUIRES_ACTION)
    pi.begin_confirm(None)

    pi.apply_authorization(ActionRequired("ch_1", URL))

    assert status_of(pi) is PIStatus.REQUIRES_ACTION
    assert pi.next_action is not None


def test_a_failed_challenge_returns_to_requires_payment_method() -> None:
    pi = reach(PIStatus.REQUIRES_ACTION)
    pi.begin_confirm(None)
    failure = Declined(
        "ch_1", "payment_intent_authentication_failure", None, "The customer failed 3DS."
    )

    txs = pi.apply_authorization(failure)

    assert txs == []
    assert status_of(pi) is PIStatus.REQUIRES_PAYMENT_METHOD
    assert pi.next_action is None
    assert pi.gateway_reference is None
    assert pi.payment_method is None
    assert pi.last_payment_error is not None
    assert pi.last_payment_error["code"] == "payment_intent_authentication_failure"


def test_changing_the_card_during_a_challenge_is_refused() -> None:
    pi = reach(PIStatus.REQUIRES_ACTION)
    before = copy.deepcopy(pi)

    with pytest.raises(IllegalTransition) as caught:
        pi.begin_confirm("tok_mastercard")

    assert caught.value.status == PIStatus.REQUIRES_ACTION
    assert "requires_action" in caught.value.message
    assert pi == before


# --- declines ---------------------------------------------------------------------------------


def test_a_decline_returns_to_requires_payment_method_with_the_error() -> None:
    pi = new_pi(amount=900)
    pi.begin_confirm("tok_chargeDeclined")

    txs = pi.apply_authorization(DECLINE)

    assert txs == []
    assert status_of(pi) is PIStatus.REQUIRES_PAYMENT_METHOD
    assert pi.payment_method is None
    assert pi.gateway_reference is None
    assert pi.amount_capturable == 0
    assert pi.amount_received == 0
    assert pi.last_payment_error == {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined.",
        "payment_method": "tok_chargeDeclined",
    }


def test_after_a_decline_confirm_needs_a_new_card_and_then_clears_the_error() -> None:
    pi = new_pi(amount=900)
    pi.begin_confirm("tok_chargeDeclined")
    pi.apply_authorization(DECLINE)

    with pytest.raises(InvalidRequest) as caught:
        pi.begin_confirm(None)
    assert caught.value.param == "payment_method"
    assert status_of(pi) is PIStatus.REQUIRES_PAYMENT_METHOD

    pi.begin_confirm("tok_visa")

    assert status_of(pi) is PIStatus.PROCESSING
    assert pi.last_payment_error is None
    pi.apply_authorization(Approved("ch_2", captured=True))
    assert status_of(pi) is PIStatus.SUCCEEDED
    assert pi.gateway_reference == "ch_2"


# --- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        PIStatus.REQUIRES_PAYMENT_METHOD,
        PIStatus.REQUIRES_CONFIRMATION,
        PIStatus.REQUIRES_ACTION,
    ],
)
def test_cancel_before_authorization_needs_no_void_and_posts_nothing(status: PIStatus) -> None:
    pi = reach(status)
    assert not pi.needs_void()

    txs = pi.cancel("requested_by_customer", NOW)

    assert txs == []
    assert status_of(pi) is PIStatus.CANCELED
    assert pi.cancellation_reason == "requested_by_customer"
    assert pi.canceled_at == NOW
    assert pi.next_action is None
    assert pi.amount_capturable == 0


def test_cancel_an_authorized_intent_needs_a_void_and_releases_the_hold() -> None:
    pi = reach(PIStatus.REQUIRES_CAPTURE, amount=1234)
    assert pi.needs_void()

    txs = pi.cancel(None, NOW)

    assert status_of(pi) is PIStatus.CANCELED
    assert pi.amount_capturable == 0
    assert pi.cancellation_reason is None
    assert pi.canceled_at == NOW
    assert txs == [ledger.release("pi_test", Money(1234, "usd"))]


@pytest.mark.parametrize("status", [s for s in PIStatus if s is not PIStatus.REQUIRES_CAPTURE])
def test_only_an_authorized_intent_needs_a_void(status: PIStatus) -> None:
    assert not reach(status).needs_void()


def test_finishing_an_operation_clears_the_pending_operation() -> None:
    pi = reach(PIStatus.PROCESSING)
    pi.pending_operation_id = "gop_1"
    pi.apply_authorization(Approved("ch_1", captured=False))
    assert pi.pending_operation_id is None

    pi.pending_operation_id = "gop_2"
    pi.apply_capture(pi.begin_capture(None))
    assert pi.pending_operation_id is None

    other = reach(PIStatus.REQUIRES_CAPTURE)
    other.pending_operation_id = "gop_3"
    other.cancel(None, NOW)
    assert other.pending_operation_id is None
