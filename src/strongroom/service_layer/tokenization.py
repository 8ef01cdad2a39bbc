"""Tokenization for the sandbox's hosted card fields: the one place a card number reaches
Strongroom, standing in for a gateway's own tokenization endpoint.

A publishable test key (`pk_test_…`) is the only key accepted; the number is checked (length,
Luhn, expiry, security code) and, if it is one of the sandbox's test cards, exchanged for a
`tok_…` that behaves like it. No error names the number, and nothing here logs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from strongroom.adapters.gateways.sandbox import CardToken
from strongroom.domain.audit import Origin
from strongroom.domain.clock import Clock
from strongroom.domain.errors import (
    AuthenticationError,
    CardError,
    InvalidRequest,
    PermissionDenied,
)
from strongroom.domain.pan import MAX_DIGITS, MIN_DIGITS, brand_of, luhn_valid
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.merchants import KeyKind, Merchants

__all__ = ["CardInput", "CardVault", "Tokenization"]

# Written between digit groups by people and by autofill; anything else makes a number invalid.
_SEPARATORS = str.maketrans("", "", " -")
LONGEST_VALIDITY_YEARS = 50


@dataclass(frozen=True)
class CardInput:
    """The card fields as the hosted fields send them: text, not yet checked. Its repr hides
    the number and the security code, so a traceback cannot show them."""

    number: str
    exp_month: str
    exp_year: str
    cvc: str

    def __repr__(self) -> str:
        return "CardInput(number=[REDACTED], cvc=[REDACTED])"


class CardVault(Protocol):
    """Where tokens are kept: the sandbox gateway."""

    async def tokenize(
        self, *, merchant_id: str, number: str, exp_month: int, exp_year: int
    ) -> CardToken | None: ...

    async def token(self, token_id: str) -> CardToken | None: ...


def _card_error(message: str, code: str, param: str, decline_code: str | None = None) -> CardError:
    error = CardError(message, code=code, decline_code=decline_code)
    error.param = param  # CardError's constructor takes no param; Stripe names the field
    return error


class Tokenization:
    def __init__(self, merchants: Merchants, vault: CardVault, clock: Clock) -> None:
        self.merchants = merchants
        self.vault = vault
        self.clock = clock

    async def authenticate(self, raw_key: str | None, origin: Origin) -> Caller:
        """The caller a publishable test key stands for.

        Raises AuthenticationError (no key, unknown or revoked key) and PermissionDenied (a
        secret key, which must never reach a browser, or a live key: the sandbox tokenizes
        test cards only)."""
        if not raw_key:
            raise AuthenticationError(
                "You did not provide a publishable key. Send it as 'Authorization: Bearer "
                "pk_test_…' or as the 'key' parameter."
            )
        auth = await self.merchants.authenticate(raw_key, origin)
        if auth.kind is not KeyKind.PUBLISHABLE:
            raise PermissionDenied(
                "Cards are tokenized with a publishable key (pk_test_…); a secret key must "
                "never be used in a browser."
            )
        if auth.caller.livemode:
            raise PermissionDenied(
                "The sandbox tokenizes test cards only: use a test publishable key (pk_test_…).",
                code="livemode_mismatch",
            )
        return replace(auth.caller, key_id=auth.key_id, origin=origin)

    async def tokenize(self, caller: Caller, card: CardInput) -> CardToken:
        """A token for the card. Raises CardError (402) for a number, expiry or security code
        that is wrong, and for a valid number that is not a sandbox test card."""
        number = card.number.translate(_SEPARATORS)
        if not (number.isascii() and number.isdigit()) or not (
            MIN_DIGITS <= len(number) <= MAX_DIGITS and luhn_valid(number)
        ):
            raise _card_error("Your card number is incorrect.", "incorrect_number", "card[number]")
        exp_month, exp_year = self._expiry(card)
        cvc = card.cvc.strip()
        if not (cvc.isascii() and cvc.isdigit() and len(cvc) == _cvc_length(number)):
            raise _card_error("Your card's security code is invalid.", "invalid_cvc", "card[cvc]")
        token = await self.vault.tokenize(
            merchant_id=caller.merchant_id, number=number, exp_month=exp_month, exp_year=exp_year
        )
        if token is None:
            raise _card_error(
                "Your card was declined: this is the sandbox, which accepts only its test "
                "cards. Use a sandbox test card.",
                "card_declined",
                "card[number]",
                decline_code="test_mode_live_card",
            )
        return token

    async def owned_token(self, caller: Caller, token_id: str) -> CardToken:
        """A token the hosted fields made for this caller's merchant. Raises InvalidRequest
        (token_invalid) for another merchant's token, a fixed test token or an unknown one."""
        token = await self.vault.token(token_id)
        if token is None or token.merchant_id != caller.merchant_id:
            raise InvalidRequest(
                "No such token: make one with the hosted card fields.",
                code="token_invalid",
                param="token",
            )
        return token

    def _expiry(self, card: CardInput) -> tuple[int, int]:
        month = _small_int(card.exp_month)
        if month is None or not 1 <= month <= 12:
            raise _card_error(
                "Your card's expiration month is invalid.",
                "invalid_expiry_month",
                "card[exp_month]",
            )
        year = _small_int(card.exp_year)
        now = self.clock.now()
        if year is not None and year < 100:  # "34" as written on the card
            year += now.year // 100 * 100
        if year is None or year > now.year + LONGEST_VALIDITY_YEARS:
            raise _card_error(
                "Your card's expiration year is invalid.", "invalid_expiry_year", "card[exp_year]"
            )
        if (year, month) < (now.year, now.month):
            raise _card_error("Your card has expired.", "expired_card", "card[exp_year]")
        return month, year


def _small_int(text: str) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 4:
        return None
    return int(text)


def _cvc_length(number: str) -> int:
    return 4 if brand_of(number) == "amex" else 3
