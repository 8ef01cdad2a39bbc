"""Bank accounts linked through an aggregator, and how their ownership is verified.

An account is `pending` until verified, and ends `verified`, `failed` or `expired`; those three
never change again, so a late or repeated provider webhook cannot move a verification back.
The provider's finer states are kept beside the coarse one:

  verification_status               status     how it got there
  pending_automatic_verification    pending    the provider will confirm it itself
  pending_manual_verification       pending    micro-deposits sent, waiting for the customer
  automatically_verified            verified   instant (Auth numbers) or the provider's webhook
  manually_verified                 verified   the customer confirmed both micro-deposits
  verification_failed               failed     three wrong answers, or the provider said so
  verification_expired              expired    ten days without success

Micro-deposits are two amounts of 1 to 99 cents. The customer's answer is compared in constant
time and order does not matter; a wrong answer never says which amount was wrong.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from strongroom.domain.errors import IllegalTransition, InvalidRequest

MAX_ATTEMPTS = 3
VERIFY_WITHIN = timedelta(days=10)


class VerificationStatus(StrEnum):
    PENDING_AUTOMATIC = "pending_automatic_verification"
    PENDING_MANUAL = "pending_manual_verification"
    AUTOMATICALLY_VERIFIED = "automatically_verified"
    MANUALLY_VERIFIED = "manually_verified"
    FAILED = "verification_failed"
    EXPIRED = "verification_expired"


class BankAccountStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    FAILED = "failed"
    EXPIRED = "expired"


STATUS_OF = {
    VerificationStatus.PENDING_AUTOMATIC: BankAccountStatus.PENDING,
    VerificationStatus.PENDING_MANUAL: BankAccountStatus.PENDING,
    VerificationStatus.AUTOMATICALLY_VERIFIED: BankAccountStatus.VERIFIED,
    VerificationStatus.MANUALLY_VERIFIED: BankAccountStatus.VERIFIED,
    VerificationStatus.FAILED: BankAccountStatus.FAILED,
    VerificationStatus.EXPIRED: BankAccountStatus.EXPIRED,
}


class AnswerOutcome(StrEnum):
    VERIFIED = "verified"
    WRONG = "wrong"  # attempts remain
    FAILED = "failed"  # that was the last attempt


def micro_deposit_amounts() -> tuple[int, int]:
    """Two amounts in cents, each 1 to 99, from the OS's CSPRNG (they are a one-time secret)."""
    return 1 + secrets.randbelow(99), 1 + secrets.randbelow(99)


def _canonical(amounts: tuple[int, int]) -> bytes:
    return ",".join(str(a) for a in sorted(amounts)).encode()


@dataclass
class BankAccount:
    id: str
    merchant_id: str
    livemode: bool
    item_id: str  # our bank item: the provider's item and its sealed access token
    provider_account_id: str  # the provider's reference to the account
    customer_id: str | None
    institution: str | None
    account_type: str  # checking or savings
    last4: str
    verification_status: VerificationStatus
    verification_attempts: int
    verify_by: datetime  # after this, a pending account is expired
    created_at: datetime
    updated_at: datetime

    @property
    def status(self) -> BankAccountStatus:
        return STATUS_OF[self.verification_status]

    @property
    def settled(self) -> bool:
        """Verified, failed or expired: the verification never changes again."""
        return self.status is not BankAccountStatus.PENDING

    def _move(self, to: VerificationStatus, now: datetime) -> bool:
        if self.settled or self.verification_status is to:
            return False
        self.verification_status = to
        self.updated_at = now
        return True

    def expire_if_due(self, now: datetime) -> bool:
        """True if this call expired it."""
        return now >= self.verify_by and self._move(VerificationStatus.EXPIRED, now)

    def apply_provider_status(self, status: VerificationStatus, now: datetime) -> bool:
        """What the provider says (its webhook, or Auth on linking). True if it changed
        anything; a settled account, or an older state than the current one, changes nothing."""
        if status is VerificationStatus.PENDING_AUTOMATIC:
            return False  # the state every account starts in: nothing to go back to
        return self._move(status, now)

    def answer_micro_deposits(
        self, given: tuple[int, int], sent: tuple[int, int], now: datetime
    ) -> AnswerOutcome:
        """Check the customer's answer. Raises IllegalTransition when the account is not
        awaiting one (already settled, expired just now, or verifying automatically)."""
        if self.expire_if_due(now) or self.settled:
            raise IllegalTransition(
                f"This bank account's verification is {self.status}; it takes no more answers.",
                status=self.status.value,
                code="bank_account_verification_failed"
                if self.status is not BankAccountStatus.VERIFIED
                else "bank_account_verified",
            )
        if self.verification_status is not VerificationStatus.PENDING_MANUAL:
            raise IllegalTransition(
                "This bank account is being verified by its provider, not by micro-deposits.",
                status=self.status.value,
                code="bank_account_unexpected_state",
            )
        if not all(isinstance(a, int) and 1 <= a <= 99 for a in given):
            raise InvalidRequest("amounts are two integers from 1 to 99 (cents).", param="amounts")
        if hmac.compare_digest(_canonical(given), _canonical(sent)):
            self._move(VerificationStatus.MANUALLY_VERIFIED, now)
            return AnswerOutcome.VERIFIED
        self.verification_attempts += 1
        self.updated_at = now
        if self.verification_attempts >= MAX_ATTEMPTS:
            self._move(VerificationStatus.FAILED, now)
            return AnswerOutcome.FAILED
        return AnswerOutcome.WRONG
