"""Double-entry postings under every money movement; balances are derived, never stored.

Debits are positive and credits negative, so a transaction balances when each currency's
postings sum to zero. Four accounts per merchant and currency tell the whole story:

    gateway_holds            funds the gateway has authorized for us but not yet captured
    customer_authorizations  the customer's side of those holds
    gateway_receivable       captured funds the gateway owes us
    merchant_payable         what we owe the merchant (captured minus refunded)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from strongroom.domain.money import Money


class Account(StrEnum):
    GATEWAY_HOLDS = "gateway_holds"
    CUSTOMER_AUTHORIZATIONS = "customer_authorizations"
    GATEWAY_RECEIVABLE = "gateway_receivable"
    MERCHANT_PAYABLE = "merchant_payable"


class Movement(StrEnum):
    AUTHORIZATION_HOLD = "authorization_hold"
    CAPTURE = "capture"
    RELEASE = "release"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class Posting:
    account: Account
    amount: int  # debit positive, credit negative, minor units
    currency: str


class UnbalancedTransaction(ValueError):
    """Raised when postings do not sum to zero per currency; always a programming error."""


@dataclass(frozen=True, slots=True)
class LedgerTransaction:
    movement: Movement
    postings: tuple[Posting, ...]
    payment_intent_id: str
    refund_id: str | None = None

    def __post_init__(self) -> None:
        check_balanced(self.postings)


def check_balanced(postings: Iterable[Posting]) -> None:
    sums: dict[str, int] = defaultdict(int)
    for p in postings:
        sums[p.currency] += p.amount
    unbalanced = {c: s for c, s in sums.items() if s != 0}
    if unbalanced:
        raise UnbalancedTransaction(f"postings do not balance: {unbalanced}")


def _pair(debit: Account, credit: Account, money: Money) -> tuple[Posting, Posting]:
    return (
        Posting(debit, money.amount, money.currency),
        Posting(credit, -money.amount, money.currency),
    )


def hold(payment_intent_id: str, money: Money) -> LedgerTransaction:
    """The gateway authorized `money`: it is held for us, not yet ours."""
    return LedgerTransaction(
        Movement.AUTHORIZATION_HOLD,
        _pair(Account.GATEWAY_HOLDS, Account.CUSTOMER_AUTHORIZATIONS, money),
        payment_intent_id,
    )


def capture(payment_intent_id: str, money: Money) -> LedgerTransaction:
    """Captured `money` of a hold: the hold shrinks, the gateway owes it, we owe the merchant."""
    return LedgerTransaction(
        Movement.CAPTURE,
        _pair(Account.CUSTOMER_AUTHORIZATIONS, Account.GATEWAY_HOLDS, money)
        + _pair(Account.GATEWAY_RECEIVABLE, Account.MERCHANT_PAYABLE, money),
        payment_intent_id,
    )


def release(payment_intent_id: str, money: Money) -> LedgerTransaction:
    """An uncaptured hold is let go (cancel, or the remainder after a partial capture)."""
    return LedgerTransaction(
        Movement.RELEASE,
        _pair(Account.CUSTOMER_AUTHORIZATIONS, Account.GATEWAY_HOLDS, money),
        payment_intent_id,
    )


def refund(payment_intent_id: str, refund_id: str, money: Money) -> LedgerTransaction:
    """Money goes back to the customer: we owe the merchant less, the gateway owes us less."""
    return LedgerTransaction(
        Movement.REFUND,
        _pair(Account.MERCHANT_PAYABLE, Account.GATEWAY_RECEIVABLE, money),
        payment_intent_id,
        refund_id,
    )
