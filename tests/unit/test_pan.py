"""Finding and masking card numbers: every major brand's published test numbers are found, in
any common spelling; order ids, phone numbers, timestamps and Luhn-invalid runs are not."""

from __future__ import annotations

import re
import timeit

import pytest

from strongroom.domain import pan
from strongroom.domain.pan import (
    brand_of,
    contains_pan,
    find_pans,
    luhn_valid,
    mask_pan,
    redact_pans,
)

# Stripe's and Braintree's published test card numbers.
TEST_CARDS = {
    "4242424242424242": "visa",
    "4000056655665556": "visa",
    "4222222222222": "visa",
    "5555555555554444": "mastercard",
    "2223003122003222": "mastercard",
    "378282246310005": "amex",
    "371449635398431": "amex",
    "6011111111111117": "discover",
    "6011000990139424": "discover",
    "3056930009020004": "diners",
    "36227206271667": "diners",
    "3566002020360505": "jcb",
    "6200000000000005": "unionpay",
}

NEAR_MISSES = [
    "ORD-2024-000123",
    "order 20240101000123456789",  # a 20-digit run
    "42424242424242424242",  # a card number glued to more digits
    "4242424242424242424242",
    "+1 415-555-0132",
    "0044 20 7946 0958",
    "+44 (0)20 7946 0958",
    "4242424242424241",  # Luhn-invalid
    "5555555555554440",
    "1234567812345670",  # Luhn-valid, in no brand's range
    "9999999999999995",
    "1735689600000",  # epoch milliseconds
    "1735689600000000000",  # epoch nanoseconds
    "2026-01-01T12:00:00.123456+00:00",
    "amount 424242424242 cents",  # 12 digits
    "2000.00 USD",
    "4242    4242    4242    4242",  # four separators between groups: not one number
    "192.168.100.200 10.0.0.1",  # addresses
    "0044 20 7946 0958 / 0044 20 7946 0959",
    "1735689600.123456",  # a timestamp with microseconds
    "1.2.3.4.5.6.7.8.9.0.1.2.3.4",
    "+1 415-555-0132\t+1 415-555-0133",
    "4242\u00a04242\u00a04242\u00a04241",  # Luhn-invalid, with no-break spaces
    "41234567-1234-4123-8123-123456789012",  # a UUID
    "sha256 ab4242424242424242cd",  # inside a hex digest
    "424242******4242",  # already masked
]


def spaced(digits: str, sep: str) -> str:
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


@pytest.mark.parametrize(("digits", "brand"), TEST_CARDS.items())
def test_published_test_cards_are_found_bare_spaced_and_dashed(digits: str, brand: str) -> None:
    assert luhn_valid(digits)
    assert brand_of(digits) == brand
    for text in (digits, spaced(digits, " "), spaced(digits, "-")):
        found = find_pans(f"note: {text}, thanks")
        assert [(m.digits, m.brand) for m in found] == [(digits, brand)]
        assert found[0].start == len("note: ")
        assert found[0].end == len("note: ") + len(text)
        assert contains_pan(text)


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_not_card_numbers(text: str) -> None:
    assert find_pans(text) == []
    assert not contains_pan(text)
    assert redact_pans(text) == text


# Every single separator a pasted or typed card number may carry between its groups.
SEPARATORS = {
    "no-break space": "\u00a0",
    "narrow no-break space": "\u202f",
    "figure space": "\u2007",
    "thin space": "\u2009",
    "ideographic space": "\u3000",
    "tab": "\t",
    "line feed": "\n",
    "carriage return": "\r",
    "hyphen": "\u2010",
    "non-breaking hyphen": "\u2011",
    "figure dash": "\u2012",
    "en dash": "\u2013",
    "em dash": "\u2014",
    "minus sign": "\u2212",
    "fullwidth hyphen-minus": "\uff0d",
    "dot": ".",
    "soft hyphen": "\u00ad",
    "zero-width space": "\u200b",
    "word joiner": "\u2060",
}


@pytest.mark.parametrize("sep", SEPARATORS.values(), ids=SEPARATORS.keys())
def test_any_unicode_whitespace_or_dash_between_groups(sep: str) -> None:
    for digits in ("4242424242424242", "5555555555554444"):
        text = spaced(digits, sep)
        found = find_pans(f"card: {text} thanks")
        assert [m.digits for m in found] == [digits]
        assert found[0].end - found[0].start == len(text)
        assert contains_pan(text)
        assert redact_pans(f"[{text}]") == f"[{mask_pan(digits)}]"
    amex = "3782" + sep + "822463" + sep + "10005"
    assert [m.brand for m in find_pans(amex)] == ["amex"]


@pytest.mark.parametrize("sep", ["  ", "--", " - ", " \u2013 ", "\t\t", "\u00a0 ", " \n ", " . "])
def test_repeated_separators_between_groups(sep: str) -> None:
    text = spaced("4242424242424242", sep)
    assert [m.digits for m in find_pans(f"x {text} y")] == ["4242424242424242"]
    assert redact_pans(text) == "424242******4242"


def test_mixed_separators_in_one_number() -> None:
    text = "4242 4242\u00a04242-4242"
    assert [m.digits for m in find_pans(text)] == ["4242424242424242"]
    assert find_pans("6011\t1111\u20131111\u20091117")[0].brand == "discover"


def test_a_card_followed_by_its_expiry_is_still_found() -> None:
    assert [m.digits for m in find_pans("4242 4242 4242 4242 12 30")] == ["4242424242424242"]
    assert [m.digits for m in find_pans("card=4242424242424242&exp=12/30")] == ["4242424242424242"]


def test_several_cards_in_one_text() -> None:
    text = "a 4242424242424242, b 3782-822463-10005; c 6200000000000005."
    assert [m.brand for m in find_pans(text)] == ["visa", "amex", "unionpay"]
    assert redact_pans(text) == "a 424242******4242, b 378282*****0005; c 620000******0005."


@pytest.mark.parametrize("digits", TEST_CARDS)
def test_masks_show_at_most_the_first_six_and_last_four(digits: str) -> None:
    for masked in (mask_pan(digits), mask_pan(spaced(digits, "-")), redact_pans(digits)):
        shown = re.sub(r"[^0-9]", "", masked)
        assert shown == digits[:6] + digits[-4:]
        assert masked.startswith(digits[:6])
        assert masked.endswith(digits[-4:])
        assert len(masked) == len(digits)
        assert not contains_pan(masked)


def test_a_short_input_to_mask_reveals_nothing() -> None:
    assert mask_pan("4242") == "****"


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_public_names() -> None:
    assert sorted(pan.__all__) == [
        "PanMatch",
        "brand_of",
        "contains_pan",
        "find_pans",
        "luhn_valid",
        "mask_pan",
        "redact_pans",
    ]


def test_text_without_a_long_digit_run_is_cheap() -> None:
    """The guard and the log redactor call this on everything; text with no card-length run of
    digits must be turned away by the first regular-expression search (a generous bound:
    a 1 kB payload in well under 100 µs even on a busy machine)."""
    text = '{"amount": 2000, "currency": "usd", "metadata": {"order": "A-1"}}' * 15
    per_call = min(timeit.repeat(lambda: contains_pan(text), number=200, repeat=5)) / 200
    assert per_call < 100e-6
