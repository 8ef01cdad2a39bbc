"""Linking a customer's bank account through an aggregator, and verifying that they own it.

Linking exchanges the browser's public token for the item's access token and reads the account
and its numbers; all three secrets (the access token, the account and routing numbers) are
sealed, bound to their rows, before the transaction that stores them, and never leave through
the API. An account the provider verified (instant Auth) is verified at once; one it will verify
itself waits for its webhook; one it cannot verify gets two micro-deposits, sent after the row
that holds their sealed amounts is committed (so a crash can only leave an account whose
deposits are still to send, never deposits nobody can check: the worker sends those, with the
account's id as the rail's reference so a resend is a no-op).

Every change of verification is an event (`bank_account.*`) and an audit entry, both in the
transaction that makes it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import Row, select, update
from sqlalchemy.exc import IntegrityError

from strongroom.adapters.banks.port import (
    AccountNumbers,
    BankProvider,
    BankProviderError,
    BankRail,
    LinkToken,
    ProviderAccount,
)
from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Binding, Envelope
from strongroom.adapters.kms.sealed import SealedValue
from strongroom.domain.audit import AuditTag, Outcome
from strongroom.domain.bank_accounts import (
    VERIFY_WITHIN,
    AnswerOutcome,
    BankAccount,
    BankAccountStatus,
    VerificationStatus,
    micro_deposit_amounts,
)
from strongroom.domain.clock import Clock
from strongroom.domain.errors import InvalidRequest, ResourceMissing, StrongroomError
from strongroom.domain.events import EventType
from strongroom.domain.ids import new_id
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.idempotency import IdempotentRequest, Replayed
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

log = structlog.get_logger(__name__)
T = TypeVar("T")

_i = t.bank_items
_a = t.bank_accounts

EVENT_OF = {
    BankAccountStatus.VERIFIED: EventType.BANK_ACCOUNT_VERIFIED,
    BankAccountStatus.FAILED: EventType.BANK_ACCOUNT_VERIFICATION_FAILED,
    BankAccountStatus.EXPIRED: EventType.BANK_ACCOUNT_VERIFICATION_EXPIRED,
}
# Plaid's webhooks that move a verification: (webhook_type, webhook_code) → the new state.
PLAID_VERIFICATION = {
    ("AUTH", "AUTOMATICALLY_VERIFIED"): VerificationStatus.AUTOMATICALLY_VERIFIED,
    ("AUTH", "VERIFICATION_EXPIRED"): VerificationStatus.EXPIRED,
}
DEPOSIT_GRACE = timedelta(minutes=1)  # a linking request's time to reach the rail itself
DEBITABLE = frozenset({"checking", "savings"})
WRONG_AMOUNTS = "The amounts do not match the micro-deposits sent to this bank account."


@dataclass(frozen=True)
class ItemRef:
    id: str
    merchant_id: str
    livemode: bool


@dataclass(frozen=True)
class Verified:
    account: BankAccount
    outcome: AnswerOutcome


class BankAccounts:
    def __init__(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        clock: Clock,
        *,
        audit: AuditLog,
        provider: BankProvider,
        rail: BankRail,
        webhook_url: str,
    ) -> None:
        self.uow = uow
        self.envelope = envelope
        self.clock = clock
        self.audit = audit
        self.provider = provider
        self.rail = rail
        self.webhook_url = webhook_url

    def _check_mode(self, caller: Caller) -> None:
        if caller.livemode and self.provider.name == "sandbox":
            raise InvalidRequest(
                "Live bank accounts need a bank provider (STRONGROOM_BANK_PROVIDER=plaid); "
                "the sandbox links test accounts only.",
                code="bank_provider_unavailable",
            )

    async def link_token(self, caller: Caller, client_user_id: str) -> LinkToken:
        """A token for the provider's Link page in the customer's browser."""
        self._check_mode(caller)
        return await self._provider_call(
            self.provider.create_link_token(
                client_user_id=client_user_id, webhook_url=self.webhook_url
            )
        )

    async def link(
        self,
        caller: Caller,
        public_token: str,
        *,
        account_id: str | None = None,
        customer_id: str | None = None,
        idem: IdempotentRequest | None = None,
    ) -> BankAccount | Replayed:
        """Link the account. Under an Idempotency-Key the key is claimed first, in a
        transaction of its own, so a retry replays the answer (or the error) without using
        the single-use public token again; the account and the answer are then stored in
        one transaction."""
        self._check_mode(caller)
        new = new_id("ba")
        if idem is not None:
            async with self.uow.transaction() as tx:
                await idem.claim(tx, self.clock.now(), new)
                if idem.replay is not None:
                    return Replayed()
                if idem.took_over and idem.resource_id:  # did the request that died finish?
                    row = (
                        await tx.repo.conn.execute(
                            select(_a).where(*_mine(caller), _a.c.id == idem.resource_id)
                        )
                    ).first()
                    if row is not None:
                        await idem.finish(tx, _account(row))
                        await tx.commit()
                        return _account(row)
                    new = idem.resource_id
                await tx.commit()
        try:
            return await self._link(caller, public_token, new, account_id, customer_id, idem)
        except StrongroomError as error:
            if idem is not None:  # a retry gets the same answer
                async with self.uow.transaction() as tx:
                    await idem.finish(tx, error)
                    await tx.commit()
            raise

    async def _link(
        self,
        caller: Caller,
        public_token: str,
        new: str,
        account_id: str | None,
        customer_id: str | None,
        idem: IdempotentRequest | None,
    ) -> BankAccount:
        if customer_id is not None:
            await self._require_customer(caller, customer_id)
        item = await self._provider_call(self.provider.exchange_public_token(public_token))
        found = await self._provider_call(self.provider.item_accounts(item.access_token))
        chosen = _choose(found.accounts, account_id)
        numbers = found.numbers.get(chosen.account_id)
        now = self.clock.now()
        verification = chosen.verification_status
        if verification is None or (
            verification is VerificationStatus.AUTOMATICALLY_VERIFIED and numbers is None
        ):
            verification = VerificationStatus.PENDING_MANUAL
        if verification is VerificationStatus.PENDING_MANUAL and numbers is None:
            raise InvalidRequest(
                "The provider has no account and routing numbers for this account, so it "
                "cannot be verified by micro-deposits.",
                param="public_token",
                code="bank_account_unusable",
            )
        account = BankAccount(
            id=new,
            merchant_id=caller.merchant_id,
            livemode=caller.livemode,
            item_id=new_id("bi"),
            provider_account_id=chosen.account_id,
            customer_id=customer_id,
            institution=found.institution,
            account_type=chosen.subtype or "checking",
            last4=chosen.mask[-4:],
            verification_status=verification,
            verification_attempts=0,
            verify_by=now + VERIFY_WITHIN,
            created_at=now,
            updated_at=now,
        )
        amounts = (
            micro_deposit_amounts() if verification is VerificationStatus.PENDING_MANUAL else None
        )
        # Sealed before the transaction: a KMS call is network I/O, not to be held in one.
        sealed_token = await self.envelope.seal(
            item.access_token.encode(), _item_binding(account.item_id, caller.merchant_id)
        )
        sealed_numbers = None
        if numbers is not None:
            plain = json.dumps({"account": numbers.account, "routing": numbers.routing})
            sealed_numbers = await self.envelope.seal(
                plain.encode(), _binding("numbers", account.id, caller.merchant_id)
            )
        sealed_amounts = None
        if amounts is not None:
            sealed_amounts = await self.envelope.seal(
                json.dumps(list(amounts)).encode(),
                _binding("micro_deposits", account.id, caller.merchant_id),
            )
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            try:
                await conn.execute(
                    _i.insert().values(
                        id=account.item_id,
                        merchant_id=account.merchant_id,
                        livemode=account.livemode,
                        provider=self.provider.name,
                        provider_item_id=item.item_id,
                        institution=found.institution,
                        access_token=sealed_token,
                        created_at=now,
                        updated_at=now,
                    )
                )
            except IntegrityError:
                raise InvalidRequest(
                    "This bank login is already linked.",
                    param="public_token",
                    code="bank_account_exists",
                ) from None
            await conn.execute(
                _a.insert().values(
                    **_row_values(account), numbers=sealed_numbers, micro_deposits=sealed_amounts
                )
            )
            self._emit(tx, EventType.BANK_ACCOUNT_CREATED, account)
            if account.status is BankAccountStatus.VERIFIED:
                self._emit(tx, EventType.BANK_ACCOUNT_VERIFIED, account)
            await self._audit(
                tx,
                caller,
                AuditTag.BANK_ACCOUNT_LINK,
                account,
                {"provider": self.provider.name, "verification_status": verification.value},
            )
            if idem is not None:
                await idem.finish(tx, account)
            await tx.commit()
        log.info(
            "bank account linked",
            bank_account=account.id,
            provider=self.provider.name,
            verification_status=verification.value,
        )
        if amounts is not None and numbers is not None:
            try:
                await self._send_deposits(account.id, numbers, amounts)
            except Exception as exc:  # the account is linked: the worker sends them later
                log.warning(
                    "micro-deposits not sent yet", bank_account=account.id, error=type(exc).__name__
                )
        return account

    async def send_unsent_deposits(self, *, batch: int = 100) -> int:
        """Send the micro-deposits of accounts whose linking request died between its commit
        and the rail (a worker loop runs this). Only accounts older than a minute, so a request
        still on its way to the rail is not raced; a repeat would be harmless anyway, as the
        rail takes the account's id as its reference. Returns how many were sent."""
        before = self.clock.now() - DEPOSIT_GRACE
        async with self.uow.reading() as repo:
            rows = (
                await repo.conn.execute(
                    select(_a.c.id, _a.c.merchant_id, _a.c.numbers, _a.c.micro_deposits)
                    .where(
                        _a.c.verification_status == VerificationStatus.PENDING_MANUAL.value,
                        _a.c.micro_deposits.is_not(None),
                        _a.c.micro_deposits_sent_at.is_(None),
                        _a.c.created_at < before,
                    )
                    .order_by(_a.c.created_at)
                    .limit(batch)
                )
            ).all()
        for row in rows:
            await self._send_deposits(
                row.id,
                await open_numbers(self.envelope, row.id, row.merchant_id, row.numbers),
                await self._open_amounts(row.id, row.merchant_id, row.micro_deposits),
            )
        return len(rows)

    async def _open_amounts(
        self, account_id: str, merchant_id: str, sealed: SealedValue
    ) -> tuple[int, int]:
        opened = await self.envelope.open(
            sealed, _binding("micro_deposits", account_id, merchant_id)
        )
        first, second = json.loads(opened)
        return int(first), int(second)

    async def _send_deposits(
        self, account_id: str, numbers: AccountNumbers, amounts: tuple[int, int]
    ) -> None:
        await self.rail.send_micro_deposits(reference=account_id, numbers=numbers, amounts=amounts)
        async with self.uow.transaction() as tx:
            await tx.repo.conn.execute(
                update(_a)
                .where(_a.c.id == account_id)
                .values(micro_deposits_sent_at=self.clock.now())
            )
            await tx.commit()

    async def get(self, caller: Caller, account_id: str) -> BankAccount:
        async with self.uow.reading() as repo:
            row = (
                await repo.conn.execute(select(_a).where(*_mine(caller), _a.c.id == account_id))
            ).first()
        if row is None:
            raise _missing(account_id)
        return _shown(_account(row), self.clock.now())

    async def list(self, caller: Caller, *, limit: int = 100) -> list[BankAccount]:
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(_a)
                .where(*_mine(caller))
                .order_by(_a.c.created_at.desc(), _a.c.id.desc())
                .limit(limit)
            )
            now = self.clock.now()
            return [_shown(_account(r), now) for r in rows]

    async def verify(self, caller: Caller, account_id: str, amounts: tuple[int, int]) -> Verified:
        """The customer's answer to the micro-deposits. A wrong one is counted (and audited)
        before the error is raised; the third locks the account as failed."""
        async with self.uow.reading() as repo:
            row = (
                await repo.conn.execute(
                    select(_a.c.micro_deposits).where(*_mine(caller), _a.c.id == account_id)
                )
            ).first()
        if row is None:
            raise _missing(account_id)
        sent: tuple[int, int] | None = None
        if row.micro_deposits is not None:  # opened outside the transaction: a KMS call
            sent = await self._open_amounts(account_id, caller.merchant_id, row.micro_deposits)
        async with self.uow.transaction() as tx:
            account = await self._locked(tx, caller, account_id)
            before = account.status
            now = self.clock.now()
            try:
                # No amounts were sent to an account the provider verifies: the domain refuses
                # the answer for its state before (0, 0) could be compared.
                outcome = account.answer_micro_deposits(amounts, sent or (0, 0), now)
            except Exception:
                if account.status is not before:  # it expired just now: keep that
                    await self._save(tx, account, before, caller=caller)
                    await tx.commit()
                raise
            await self._save(tx, account, before, caller=caller)
            await self._audit(
                tx,
                caller,
                AuditTag.BANK_ACCOUNT_VERIFY,
                account,
                {"result": outcome.value, "attempts": account.verification_attempts},
                outcome=Outcome.SUCCESS if outcome is AnswerOutcome.VERIFIED else Outcome.FAILURE,
            )
            await tx.commit()
        if outcome is AnswerOutcome.WRONG:
            left = 3 - account.verification_attempts
            raise InvalidRequest(
                f"{WRONG_AMOUNTS} {left} attempt{'s' if left != 1 else ''} left.",
                param="amounts",
                code="bank_account_verification_failed",
            )
        if outcome is AnswerOutcome.FAILED:
            raise InvalidRequest(
                f"{WRONG_AMOUNTS} That was the last attempt: the bank account's verification "
                "has failed, and it cannot be debited.",
                param="amounts",
                code="bank_account_verification_failed",
            )
        return Verified(account, outcome)

    async def expire_due(self, *, batch: int = 100) -> int:
        """Expire pending accounts past their ten days (a worker loop runs this). Returns how
        many were expired."""
        now = self.clock.now()
        pending = [s.value for s in VerificationStatus if s.value.startswith("pending")]
        async with self.uow.transaction() as tx:
            due = (
                select(_a)
                .where(_a.c.verification_status.in_(pending), _a.c.verify_by <= now)
                .with_for_update(skip_locked=True)  # SQLite: its write lock serialises instead
            )
            rows = (await tx.repo.conn.execute(due.limit(batch))).all()
            expired = 0
            for row in rows:
                account = _account(row)
                before = account.status
                if account.expire_if_due(now):
                    await self._save(tx, account, before, caller=None)
                    expired += 1
            await tx.commit()
        return expired

    # --- the provider's webhooks -----------------------------------------------------------------
    async def item_for_webhook(self, provider_item_id: str) -> ItemRef | None:
        """Our item for the provider's item id, if we hold one."""
        async with self.uow.reading() as repo:
            row = (
                await repo.conn.execute(
                    select(_i.c.id, _i.c.merchant_id, _i.c.livemode).where(
                        _i.c.provider == self.provider.name,
                        _i.c.provider_item_id == provider_item_id,
                    )
                )
            ).first()
        return None if row is None else ItemRef(row.id, row.merchant_id, row.livemode)

    async def apply_plaid_webhook(self, item_id: str, payload: str) -> str | None:
        """Apply a stored, verified Plaid webhook about one of our items. Only a trigger for
        the verification state, which never moves back (see the domain), so duplicates and
        late deliveries change nothing. None when done; else why not yet (retried)."""
        doc = json.loads(payload)
        status = PLAID_VERIFICATION.get((doc.get("webhook_type"), doc.get("webhook_code")))
        if status is None:
            return None  # nothing Strongroom acts on
        async with self.uow.transaction() as tx:
            query = (
                select(_a)
                .where(
                    _a.c.item_id == item_id,
                    _a.c.provider_account_id == str(doc.get("account_id")),
                )
                .with_for_update()
            )
            row = (await tx.repo.conn.execute(query)).first()
            if row is None:
                return "no bank account with this reference yet"
            account = _account(row)
            before = account.status
            if account.apply_provider_status(status, self.clock.now()):
                await self._save(tx, account, before, caller=None)
                await tx.commit()
        return None

    # --- internals -------------------------------------------------------------------------------
    async def _locked(self, tx: Transaction, caller: Caller, account_id: str) -> BankAccount:
        query = select(_a).where(*_mine(caller), _a.c.id == account_id).with_for_update()
        row = (await tx.repo.conn.execute(query)).first()
        if row is None:
            raise _missing(account_id)
        return _account(row)

    async def _save(
        self,
        tx: Transaction,
        account: BankAccount,
        before: BankAccountStatus,
        *,
        caller: Caller | None,
    ) -> None:
        await tx.repo.conn.execute(
            update(_a)
            .where(_a.c.id == account.id)
            .values(
                verification_status=account.verification_status.value,
                verification_attempts=account.verification_attempts,
                updated_at=account.updated_at,
            )
        )
        if account.status is before:
            return
        self._emit(tx, EVENT_OF[account.status], account)
        if caller is None:  # the system's doing (expiry, a provider's webhook)
            event = self.audit.event(
                AuditTag.BANK_ACCOUNT_VERIFICATION_UPDATE,
                merchant_id=account.merchant_id,
                livemode=account.livemode,
                resource=("bank_account", account.id),
                details={"verification_status": account.verification_status.value},
            )
            await tx.repo.add_audit_event(event)

    def _emit(self, tx: Transaction, event: EventType, account: BankAccount) -> None:
        tx.emit(
            event,
            merchant_id=account.merchant_id,
            livemode=account.livemode,
            aggregate=("bank_account", account.id),
            data=self.uow.render(account),
        )

    async def _audit(
        self,
        tx: Transaction,
        caller: Caller,
        tag: AuditTag,
        account: BankAccount,
        details: dict[str, object],
        *,
        outcome: Outcome = Outcome.SUCCESS,
    ) -> None:
        event = self.audit.by_caller(
            caller, tag, resource=("bank_account", account.id), outcome=outcome, details=details
        )
        await tx.repo.add_audit_event(event)

    async def _require_customer(self, caller: Caller, customer_id: str) -> None:
        async with self.uow.reading() as repo:
            found = await repo.get_customer(
                caller.merchant_id, customer_id, livemode=caller.livemode
            )
        if found is None:
            raise ResourceMissing(f"No such customer: '{customer_id[:40]}'", param="customer")

    @staticmethod
    async def _provider_call(call: Awaitable[T]) -> T:
        try:
            return await call
        except BankProviderError as exc:
            raise InvalidRequest(
                f"The bank provider refused: {exc}", code=f"bank_provider_{exc.code.lower()}"
            ) from None


def _choose(accounts: list[ProviderAccount], account_id: str | None) -> ProviderAccount:
    debitable = [a for a in accounts if a.type == "depository" and a.subtype in DEBITABLE]
    if account_id is not None:
        for account in debitable:
            if account.account_id == account_id:
                return account
        raise InvalidRequest(
            "account_id is not a checking or savings account of this bank login.",
            param="account_id",
        )
    if len(debitable) != 1:
        raise InvalidRequest(
            f"This bank login has {len(debitable)} checking or savings accounts; name one "
            "with account_id.",
            param="account_id",
        )
    return debitable[0]


def _mine(caller: Caller) -> tuple[Any, ...]:
    return (_a.c.merchant_id == caller.merchant_id, _a.c.livemode == caller.livemode)


def _shown(account: BankAccount, now: datetime) -> BankAccount:
    """As of now: past its ten days a pending account reads as expired, before the sweep has
    stored that."""
    account.expire_if_due(now)
    return account


async def open_numbers(
    envelope: Envelope, account_id: str, merchant_id: str, sealed: SealedValue
) -> AccountNumbers:
    """An account's full numbers, opened (for the rail only: never for a response or a log)."""
    fields = json.loads(await envelope.open(sealed, _binding("numbers", account_id, merchant_id)))
    return AccountNumbers(account_id, fields["account"], fields["routing"])


def _binding(column: str, account_id: str, merchant_id: str) -> Binding:
    return Binding.for_row(_a, column, account_id, merchant_id)


def _item_binding(item_id: str, merchant_id: str) -> Binding:
    return Binding.for_row(_i, "access_token", item_id, merchant_id)


def _missing(account_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such bank_account: '{account_id[:40]}'", param="id")


def _row_values(account: BankAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "merchant_id": account.merchant_id,
        "livemode": account.livemode,
        "item_id": account.item_id,
        "provider_account_id": account.provider_account_id,
        "customer_id": account.customer_id,
        "institution": account.institution,
        "account_type": account.account_type,
        "last4": account.last4,
        "verification_status": account.verification_status.value,
        "verification_attempts": account.verification_attempts,
        "verify_by": account.verify_by,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }


def _account(row: Row[Any]) -> BankAccount:
    return BankAccount(
        id=row.id,
        merchant_id=row.merchant_id,
        livemode=row.livemode,
        item_id=row.item_id,
        provider_account_id=row.provider_account_id,
        customer_id=row.customer_id,
        institution=row.institution,
        account_type=row.account_type,
        last4=row.last4,
        verification_status=VerificationStatus(row.verification_status),
        verification_attempts=row.verification_attempts,
        verify_by=row.verify_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
