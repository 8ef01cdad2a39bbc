"""The embedded bank provider, for test mode without an aggregator: public tokens are fixed test
values, like the gateways' test cards, and each names the kind of account it links.

  public token                          the account it links
  public-sandbox-instant                checking, numbers from Auth at once: verified on linking
  public-sandbox-automatic              checking, the provider verifies it later (its webhook)
  public-sandbox-manual                 checking, no verified numbers: micro-deposits
  public-sandbox-insufficient-funds     checking, verified; every debit comes back R01

A suffix (`public-sandbox-instant-7`) makes another item of the same kind. Access tokens carry
the kind, so the sandbox keeps no state and answers alike in every process; a rotated token is
a new random one of the same kind (the sandbox cannot tell an old one from a new one: use the
Plaid stand-in to test that the old one stops working)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from strongroom.adapters.banks.port import (
    AccountNumbers,
    BankProviderError,
    Item,
    ItemAccounts,
    LinkToken,
    ProviderAccount,
)
from strongroom.domain.bank_accounts import VerificationStatus
from strongroom.domain.clock import Clock

PREFIX = "public-sandbox-"
INSTITUTION = "Sandbox Savings & Loan"
ROUTING = "110000000"
KINDS: dict[str, tuple[str, VerificationStatus | None]] = {
    # kind: (account number, what Auth says)
    "instant": ("000123456789", VerificationStatus.AUTOMATICALLY_VERIFIED),
    "automatic": ("000222222227", VerificationStatus.PENDING_AUTOMATIC),
    "manual": ("000333333335", None),
    "insufficient-funds": ("000111111116", VerificationStatus.AUTOMATICALLY_VERIFIED),
}
INSUFFICIENT_FUNDS_ACCOUNT = KINDS["insufficient-funds"][0]


class SandboxBankProvider:
    name = "sandbox"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def create_link_token(self, *, client_user_id: str, webhook_url: str) -> LinkToken:
        expiration: datetime = self.clock.now() + timedelta(hours=4)
        return LinkToken("link-sandbox-" + secrets.token_hex(16), expiration)

    async def exchange_public_token(self, public_token: str) -> Item:
        kind = (
            _kind_of(public_token.removeprefix(PREFIX)) if public_token.startswith(PREFIX) else None
        )
        if kind is None:
            raise BankProviderError(
                "The public token is not one of the sandbox's test tokens.",
                code="INVALID_PUBLIC_TOKEN",
            )
        # The same public token always names the same item, as an exchange is single-use.
        item_id = "item-sandbox-" + hashlib.sha256(public_token.encode()).hexdigest()[:24]
        return Item(item_id, _access_token(kind))

    async def item_accounts(self, access_token: str) -> ItemAccounts:
        kind = _kind_of(access_token.removeprefix("access-sandbox-").rsplit("-", 1)[0])
        if not access_token.startswith("access-sandbox-") or kind is None:
            raise BankProviderError("The access token is not valid.", code="INVALID_ACCESS_TOKEN")
        number, verification = KINDS[kind]
        account = ProviderAccount(
            account_id=f"acc-sandbox-{kind}",
            name="Sandbox Checking",
            mask=number[-4:],
            type="depository",
            subtype="checking",
            verification_status=verification,
        )
        # Numbers for every kind; for "manual" they are the ones the customer typed in, which
        # nothing has verified yet.
        numbers = {account.account_id: AccountNumbers(account.account_id, number, ROUTING)}
        return ItemAccounts(INSTITUTION, [account], numbers)

    async def rotate_access_token(self, access_token: str) -> str:
        await self.item_accounts(access_token)  # refuses a token that is not the sandbox's
        kind = access_token.removeprefix("access-sandbox-").rsplit("-", 1)[0]
        return _access_token(kind)

    async def webhook_verification_key(self, key_id: str) -> dict[str, object] | None:
        return None  # the sandbox sends no webhooks


def _kind_of(rest: str) -> str | None:
    for kind in sorted(KINDS, key=len, reverse=True):
        if rest == kind or rest.startswith(kind + "-"):
            return kind
    return None


def _access_token(kind: str) -> str:
    return f"access-sandbox-{kind}-{secrets.token_hex(16)}"


class SandboxBankRail:
    """Micro-deposits that go nowhere: kept in this process by reference, so a test can read
    the amounts off the customer's "statement" (a real customer reads them at their bank).
    Debits all clear, except from the insufficient-funds account, which returns them R01."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[int, int]] = {}

    async def send_micro_deposits(
        self, *, reference: str, numbers: AccountNumbers, amounts: tuple[int, int]
    ) -> None:
        self.sent.setdefault(reference, amounts)

    async def debit_outcome(self, *, reference: str, numbers: AccountNumbers) -> str | None:
        return "R01" if numbers.account == INSUFFICIENT_FUNDS_ACCOUNT else None
