"""The double-entry ledger: every builder balances per currency, moves the right accounts, and an
unbalanced transaction cannot be constructed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.domain import ledger
from strongroom.domain.ledger import (
    Account,
    LedgerTransaction,
    Movement,
    Posting,
    UnbalancedTransaction,
    check_balanced,
)
from strongroom.domain.money import Money

Builder = Callable[[Money], LedgerTransaction]

BUILDERS: dict[str, Builder] = {
    "hold": lambda m: ledger.hold("pi_1", m),
    "capture": lambda m: ledger.capture("pi_1", m),
    "release": lambda m: ledger.release("pi_1", m),
    "refund": lambda m: ledger.refund("pi_1", "re_1", m),
}


def by_currency(postings: Iterable[Posting]) -> dict[str, int]:
    sums: dict[str, int] = defaultdict(int)
    for p in postings:
        sums[p.currency] += p.amount
    return dict(sums)


def balances(txs: Iterable[LedgerTransaction]) -> dict[Account, int]:
    out: dict[Account, int] = defaultdict(int)
    for tx in txs:
        for p in tx.postings:
            out[p.account] += p.amount
    return {account: out[account] for account in Account}


@given(
    st.sampled_from(sorted(BUILDERS)),
    st.integers(min_value=1, max_value=10**12),
    st.sampled_from(["usd", "jpy", "kwd", "eur"]),
)
def test_every_builder_balances_per_currency(name: str, amount: int, currency: str) -> None:
    tx = BUILDERS[name](Money(amount, currency))

    assert by_currency(tx.postings) == {currency: 0}
    assert all(p.currency == currency for p in tx.postings)
    assert sum(p.amount for p in tx.postings if p.amount > 0) == amount * (
        2 if name == "capture" else 1
    )


@pytest.mark.parametrize(
    ("name", "movement", "expected"),
    [
        (
            "hold",
            Movement.AUTHORIZATION_HOLD,
            {Account.GATEWAY_HOLDS: 500, Account.CUSTOMER_AUTHORIZATIONS: -500},
        ),
        (
            "capture",
            Movement.CAPTURE,
            {
                Account.CUSTOMER_AUTHORIZATIONS: 500,
                Account.GATEWAY_HOLDS: -500,
                Account.GATEWAY_RECEIVABLE: 500,
                Account.MERCHANT_PAYABLE: -500,
            },
        ),
        (
            "release",
            Movement.RELEASE,
            {Account.CUSTOMER_AUTHORIZATIONS: 500, Account.GATEWAY_HOLDS: -500},
        ),
        (
            "refund",
            Movement.REFUND,
            {Account.MERCHANT_PAYABLE: 500, Account.GATEWAY_RECEIVABLE: -500},
        ),
    ],
)
def test_each_builder_moves_the_documented_accounts(
    name: str, movement: Movement, expected: dict[Account, int]
) -> None:
    tx = BUILDERS[name](Money(500, "kwd"))

    assert tx.movement is movement
    assert tx.payment_intent_id == "pi_1"
    assert tx.refund_id == ("re_1" if name == "refund" else None)
    moved = {account: amount for account, amount in balances([tx]).items() if amount}
    assert moved == expected


@given(
    st.integers(min_value=1, max_value=10**9),
    st.data(),
)
def test_a_full_lifecycle_leaves_holds_empty_and_payable_equal_to_received_minus_refunded(
    authorized: int, data: st.DataObject
) -> None:
    captured = data.draw(st.integers(min_value=1, max_value=authorized), label="captured")
    refunds: list[int] = []
    while sum(refunds) < captured and data.draw(st.booleans(), label="another refund"):
        left = captured - sum(refunds)
        refunds.append(data.draw(st.integers(min_value=1, max_value=left), label="refund"))
    usd = "usd"
    txs = [
        ledger.hold("pi_1", Money(authorized, usd)),
        ledger.capture("pi_1", Money(captured, usd)),
    ]
    if authorized > captured:
        txs.append(ledger.release("pi_1", Money(authorized - captured, usd)))
    txs += [ledger.refund("pi_1", f"re_{i}", Money(r, usd)) for i, r in enumerate(refunds)]

    result = balances(txs)

    assert result[Account.GATEWAY_HOLDS] == 0
    assert result[Account.CUSTOMER_AUTHORIZATIONS] == 0
    assert -result[Account.MERCHANT_PAYABLE] == captured - sum(refunds)
    assert result[Account.GATEWAY_RECEIVABLE] == captured - sum(refunds)
    assert sum(result.values()) == 0


def test_an_unbalanced_transaction_cannot_be_constructed() -> None:
    postings = (
        Posting(Account.GATEWAY_RECEIVABLE, 100, "usd"),
        Posting(Account.MERCHANT_PAYABLE, -99, "usd"),
    )

    with pytest.raises(UnbalancedTransaction, match="usd"):
        LedgerTransaction(Movement.CAPTURE, postings, "pi_1")


def test_postings_must_balance_in_each_currency_not_just_in_total() -> None:
    postings = (
        Posting(Account.GATEWAY_RECEIVABLE, 100, "usd"),
        Posting(Account.MERCHANT_PAYABLE, -100, "eur"),
    )

    with pytest.raises(UnbalancedTransaction) as caught:
        LedgerTransaction(Movement.CAPTURE, postings, "pi_1")

    assert "usd" in str(caught.value)
    assert "eur" in str(caught.value)


def test_an_unbalanced_transaction_is_a_value_error() -> None:
    assert issubclass(UnbalancedTransaction, ValueError)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Account)),
            st.integers(min_value=-(10**9), max_value=10**9),
            st.sampled_from(["usd", "jpy", "kwd"]),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_check_balanced_accepts_exactly_the_postings_that_sum_to_zero_per_currency(
    raw: list[tuple[Account, int, str]], close: bool
) -> None:
    postings = [Posting(account, amount, currency) for account, amount, currency in raw]
    if close:  # offset every currency to zero, so balanced sets are drawn as often as not
        postings += [
            Posting(Account.MERCHANT_PAYABLE, -total, currency)
            for currency, total in by_currency(postings).items()
        ]
    balanced = all(total == 0 for total in by_currency(postings).values())

    if balanced:
        check_balanced(postings)
        LedgerTransaction(Movement.CAPTURE, tuple(postings), "pi_1")
    else:
        with pytest.raises(UnbalancedTransaction):
            check_balanced(postings)


def test_a_transaction_is_immutable() -> None:
    tx = ledger.hold("pi_1", Money(100, "usd"))

    with pytest.raises(AttributeError):
        tx.postings = ()  # type: ignore[misc]
