"""Money: ISO 4217 minor units, currency parsing, amount bounds, and display formatting."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.domain.errors import InvalidRequest
from strongroom.domain.money import (
    CURRENCY_EXPONENTS,
    Money,
    check_amount,
    exponent,
    parse_currency,
)


@pytest.mark.parametrize(
    ("currency", "expected"),
    [
        ("jpy", 0),
        ("krw", 0),
        ("vnd", 0),
        ("clp", 0),
        ("isk", 0),
        ("usd", 2),
        ("eur", 2),
        ("gbp", 2),
        ("kwd", 3),
        ("bhd", 3),
        ("jod", 3),
        ("omr", 3),
        ("tnd", 3),
    ],
)
def test_exponent_is_the_iso_4217_minor_unit(currency: str, expected: int) -> None:
    assert exponent(currency) == expected
    assert exponent(currency.upper()) == expected


def test_every_known_code_is_three_upper_case_letters_with_a_known_exponent() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    for code, exp in CURRENCY_EXPONENTS.items():
        assert len(code) == 3
        assert code.isalpha()
        assert code.isupper()
        assert exp in (0, 2, 3)


@pytest.mark.parametrize(
    ("given_code", "canonical"),
    [("usd", "usd"), ("USD", "usd"), ("Usd", "usd"), ("jPy", "jpy"), ("KWD", "kwd")],
)
def test_parse_currency_accepts_any_case_and_returns_lower_case(
    given_code: str, canonical: str
) -> None:
    assert parse_currency(given_code) == canonical


@given(st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_parse_currency_accepts_every_listed_code(code: str) -> None:
    assert parse_currency(code) == code.lower()
    assert parse_currency(code.lower()) == code.lower()


@pytest.mark.parametrize("bad", ["xyz", "", "usdd", "us", " usd", "usd ", "u$d", "XXX"])
def test_parse_currency_refuses_unknown_codes(bad: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_currency(bad)

    assert caught.value.code == "invalid_currency"
    assert caught.value.param == "currency"
    assert caught.value.type == "invalid_request_error"
    assert repr(bad) in caught.value.message


def test_parse_currency_reports_the_parameter_it_was_given() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_currency("xyz", param="settlement_currency")

    assert caught.value.param == "settlement_currency"


@pytest.mark.parametrize("amount", [0, -1, -(10**12)])
def test_check_amount_refuses_zero_and_negative(amount: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_amount(amount, maximum=1000)

    assert caught.value.code == "amount_too_small"
    assert caught.value.param == "amount"


def test_check_amount_refuses_more_than_the_maximum() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_amount(1001, maximum=1000, param="amount_to_capture")

    assert caught.value.code == "amount_too_large"
    assert caught.value.param == "amount_to_capture"
    assert "1000" in caught.value.message


@given(st.integers(min_value=1, max_value=10**12), st.data())
def test_check_amount_accepts_every_amount_from_one_to_the_maximum(
    maximum: int, data: st.DataObject
) -> None:
    amount = data.draw(st.integers(min_value=1, max_value=maximum))
    assert check_amount(amount, maximum=maximum) == amount
    assert check_amount(maximum, maximum=maximum) == maximum


@pytest.mark.parametrize("amount", [1.0, 12.34, True, False, "100", Decimal("100"), None])
def test_money_refuses_anything_but_an_int(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "usd")  # type: ignore[arg-type]


def test_money_adds_subtracts_and_negates_within_one_currency() -> None:
    a, b = Money(1234, "usd"), Money(66, "usd")

    assert a + b == Money(1300, "usd")
    assert a - b == Money(1168, "usd")
    assert -a == Money(-1234, "usd")


@pytest.mark.parametrize(
    "combine", [lambda a, b: a + b, lambda a, b: a - b], ids=["add", "subtract"]
)
def test_money_refuses_to_mix_currencies(combine: Callable[[Money, Money], Money]) -> None:
    usd, eur = Money(100, "usd"), Money(100, "eur")

    with pytest.raises(ValueError, match=r"usd.*eur"):
        combine(usd, eur)


def test_money_is_immutable() -> None:
    m = Money(100, "usd")
    with pytest.raises(AttributeError):
        m.amount = 200  # type: ignore[misc]


@pytest.mark.parametrize(
    ("money", "shown"),
    [
        (Money(1234, "usd"), "12.34 USD"),
        (Money(5, "usd"), "0.05 USD"),
        (Money(0, "usd"), "0.00 USD"),
        (Money(100, "usd"), "1.00 USD"),
        (Money(1000, "jpy"), "1000 JPY"),
        (Money(0, "jpy"), "0 JPY"),
        (Money(1234567, "kwd"), "1234.567 KWD"),
        (Money(1, "kwd"), "0.001 KWD"),
        (Money(-5, "usd"), "-0.05 USD"),
        (Money(-1234, "usd"), "-12.34 USD"),
        (Money(-7, "jpy"), "-7 JPY"),
        (Money(-1001, "kwd"), "-1.001 KWD"),
    ],
)
def test_format_shows_major_units_with_the_currency_exponent(money: Money, shown: str) -> None:
    assert money.format() == shown


@given(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from(["usd", "jpy", "kwd", "eur", "bhd", "krw"]),
)
def test_format_is_exactly_the_amount_in_major_units(amount: int, currency: str) -> None:
    number, code = Money(amount, currency).format().split(" ")

    assert code == currency.upper()
    assert Decimal(number) == Decimal(amount).scaleb(-exponent(currency))
    decimals = number.partition(".")[2]
    assert len(decimals) == exponent(currency)
