"""The bank-account verification state machine: micro-deposit answers, attempts, expiry, and
provider states that never move a settled verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strongroom.domain.bank_accounts import (
    VERIFY_WITHIN,
    AnswerOutcome,
    BankAccount,
    BankAccountStatus,
    VerificationStatus,
    micro_deposit_amounts,
)
from strongroom.domain.errors import IllegalTransition, InvalidRequest

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SENT = (32, 45)


def _account(status: VerificationStatus = VerificationStatus.PENDING_MANUAL) -> BankAccount:
    return BankAccount(
        id="ba_1",
        merchant_id="acct_1",
        livemode=False,
        item_id="bi_1",
        provider_account_id="acc_1",
        customer_id=None,
        institution="First Platypus Bank",
        account_type="checking",
        last4="6789",
        verification_status=status,
        verification_attempts=0,
        verify_by=T0 + VERIFY_WITHIN,
        created_at=T0,
        updated_at=T0,
    )


def test_the_right_amounts_in_either_order_verify() -> None:
    for given in ((32, 45), (45, 32)):
        account = _account()
        assert account.answer_micro_deposits(given, SENT, T0) is AnswerOutcome.VERIFIED
        assert account.verification_status is VerificationStatus.MANUALLY_VERIFIED
        assert account.status is BankAccountStatus.VERIFIED


def test_three_wrong_answers_fail_it_and_a_fourth_right_one_is_refused() -> None:
    account = _account()
    outcomes = [account.answer_micro_deposits((32, 44), SENT, T0) for _ in range(3)]
    assert outcomes == [AnswerOutcome.WRONG, AnswerOutcome.WRONG, AnswerOutcome.FAILED]
    assert account.status is BankAccountStatus.FAILED
    with pytest.raises(IllegalTransition) as refused:
        account.answer_micro_deposits(SENT, SENT, T0)
    assert refused.value.code == "bank_account_verification_failed"
    assert account.status is BankAccountStatus.FAILED


def test_day_ten_without_success_expires_it_even_with_the_right_answer() -> None:
    account = _account()
    assert not account.expire_if_due(T0 + VERIFY_WITHIN - timedelta(seconds=1))
    with pytest.raises(IllegalTransition):
        account.answer_micro_deposits(SENT, SENT, T0 + VERIFY_WITHIN)
    assert account.verification_status is VerificationStatus.EXPIRED
    assert account.status is BankAccountStatus.EXPIRED


def test_right_amounts_on_the_last_day_verify() -> None:
    account = _account()
    last_moment = T0 + VERIFY_WITHIN - timedelta(seconds=1)
    assert account.answer_micro_deposits(SENT, SENT, last_moment) is AnswerOutcome.VERIFIED


def test_amounts_out_of_range_are_refused_without_costing_an_attempt() -> None:
    account = _account()
    for given in ((0, 45), (32, 100)):
        with pytest.raises(InvalidRequest):
            account.answer_micro_deposits(given, SENT, T0)
    assert account.verification_attempts == 0


def test_an_account_verifying_automatically_takes_no_answers() -> None:
    account = _account(VerificationStatus.PENDING_AUTOMATIC)
    with pytest.raises(IllegalTransition) as refused:
        account.answer_micro_deposits(SENT, SENT, T0)
    assert refused.value.code == "bank_account_unexpected_state"


@pytest.mark.parametrize(
    "settled",
    [
        VerificationStatus.AUTOMATICALLY_VERIFIED,
        VerificationStatus.MANUALLY_VERIFIED,
        VerificationStatus.FAILED,
        VerificationStatus.EXPIRED,
    ],
)
def test_a_settled_verification_never_moves(settled: VerificationStatus) -> None:
    account = _account(settled)
    for status in VerificationStatus:
        assert not account.apply_provider_status(status, T0 + timedelta(days=30))
    assert not account.expire_if_due(T0 + timedelta(days=30))
    assert account.verification_status is settled


def test_the_provider_can_verify_or_expire_a_pending_account() -> None:
    account = _account(VerificationStatus.PENDING_AUTOMATIC)
    assert not account.apply_provider_status(VerificationStatus.PENDING_AUTOMATIC, T0)
    assert account.apply_provider_status(VerificationStatus.AUTOMATICALLY_VERIFIED, T0)
    assert account.status is BankAccountStatus.VERIFIED
    assert not account.apply_provider_status(VerificationStatus.EXPIRED, T0), "late, ignored"


def test_micro_deposit_amounts_are_cents_from_1_to_99() -> None:
    seen = {a for _ in range(2000) for a in micro_deposit_amounts()}
    assert min(seen) == 1
    assert max(seen) == 99
