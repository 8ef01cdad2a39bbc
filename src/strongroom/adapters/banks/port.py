"""The bank provider port: an aggregator (Plaid, or the embedded sandbox) through which a
customer links a bank account. Strongroom never sees bank logins: the customer signs in at the
provider's Link page, which hands the browser a short-lived public token; the server exchanges
it for a long-lived access token (a secret, sealed at rest) and reads the item's accounts and,
where the provider has them, their account and routing numbers (Auth)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from strongroom.domain.bank_accounts import VerificationStatus


class BankProviderError(Exception):
    """The provider refused or failed a call. `code` is its error code (e.g. Plaid's
    INVALID_PUBLIC_TOKEN); the message never holds a token."""

    def __init__(self, message: str, *, code: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class LinkToken:
    link_token: str
    expiration: datetime


@dataclass(frozen=True)
class Item:
    """An exchanged public token: the provider's item and its access token (a secret)."""

    item_id: str
    access_token: str


@dataclass(frozen=True)
class ProviderAccount:
    account_id: str
    name: str
    mask: str  # the last four digits, which the provider shows anyway
    type: str  # depository, credit, loan, …
    subtype: str | None  # checking, savings, …
    # None when the provider has not verified it (numbers then need micro-deposits);
    # PENDING_AUTOMATIC when the provider is verifying it itself.
    verification_status: VerificationStatus | None


@dataclass(frozen=True)
class AccountNumbers:
    """Full account and routing numbers: secrets, sealed at rest, never in an API answer."""

    account_id: str
    account: str
    routing: str


@dataclass(frozen=True)
class ItemAccounts:
    institution: str | None
    accounts: list[ProviderAccount]
    numbers: dict[str, AccountNumbers]  # by account id; missing where Auth has none yet


class BankProvider(Protocol):
    name: str

    async def create_link_token(self, *, client_user_id: str, webhook_url: str) -> LinkToken: ...

    async def exchange_public_token(self, public_token: str) -> Item: ...

    async def item_accounts(self, access_token: str) -> ItemAccounts:
        """The item's accounts, with their numbers from Auth where it has them."""
        ...

    async def rotate_access_token(self, access_token: str) -> str:
        """A new access token for the same item; the old one stops working."""
        ...

    async def webhook_verification_key(self, key_id: str) -> dict[str, object] | None:
        """The public JWK that signs the provider's webhooks under `key_id` (None if the
        provider has no such key), with its `expired_at` if it has one."""
        ...


class BankRail(Protocol):
    """The ACH rail: the two micro-deposits that prove the customer can read the account's
    statement, and the debits that pay PaymentIntents. `reference` makes a repeat a no-op."""

    async def send_micro_deposits(
        self, *, reference: str, numbers: AccountNumbers, amounts: tuple[int, int]
    ) -> None: ...

    async def debit_outcome(self, *, reference: str, numbers: AccountNumbers) -> str | None:
        """At a debit's settlement: None if it cleared, else the NACHA return code (R01, …)."""
        ...
