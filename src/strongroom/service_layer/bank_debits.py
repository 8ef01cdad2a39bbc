"""PaymentIntents paid from a linked, verified bank account (ACH-style debits).

Confirming with a bank account (`payment_method: "ba_…"`) makes no gateway call: in the same
transaction as the intent's move to `processing`, the amount is held in the ledger and the debit
is recorded with its settlement date, so the debit exists exactly when the intent says so and a
retried request (Idempotency-Key) can never debit twice. The worker settles due debits: the
rail says whether the bank cleared the debit (the intent `succeeded`, the hold captured) or
returned it with a NACHA code such as R01, insufficient funds (the hold reversed, the intent
back to `requires_payment_method`, and `payment_intent.payment_failed` tells the merchant).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update

from strongroom.adapters.banks.port import BankRail
from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Envelope
from strongroom.domain.audit import AuditTag, Outcome
from strongroom.domain.bank_accounts import STATUS_OF, BankAccountStatus, VerificationStatus
from strongroom.domain.clock import Clock
from strongroom.domain.errors import InvalidRequest, ResourceMissing
from strongroom.domain.ids import new_id
from strongroom.domain.model import PaymentIntent
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.bank_accounts import open_numbers
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

log = structlog.get_logger(__name__)

_a = t.bank_accounts
_d = t.bank_debits
PREFIX = "ba_"
CURRENCIES = frozenset({"usd"})  # ACH moves dollars only
RETURN_REASONS = {
    "R01": "insufficient_funds",
    "R02": "account_closed",
    "R03": "no_account",
    "R04": "invalid_account_number",
    "R29": "debit_not_authorized",
}


def is_bank_account(payment_method: str | None) -> bool:
    return payment_method is not None and payment_method.startswith(PREFIX)


class BankDebits:
    def __init__(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        clock: Clock,
        *,
        audit: AuditLog,
        rail: BankRail,
        settlement_days: int,
    ) -> None:
        self.uow = uow
        self.envelope = envelope
        self.clock = clock
        self.audit = audit
        self.rail = rail
        self.settle_after = timedelta(days=settlement_days)

    async def check_debitable(self, caller: Caller, bank_account_id: str, currency: str) -> None:
        """Before the transaction: the account is the caller's, verified, and the currency is
        one the rail moves. Checked again under the intent's lock only by its existence: a
        verified account never becomes unverified."""
        if currency not in CURRENCIES:
            raise InvalidRequest(
                "Bank debits are in usd only.", param="currency", code="currency_not_supported"
            )
        async with self.uow.reading() as repo:
            row = (
                await repo.conn.execute(
                    select(_a.c.verification_status).where(
                        _a.c.id == bank_account_id,
                        _a.c.merchant_id == caller.merchant_id,
                        _a.c.livemode == caller.livemode,
                    )
                )
            ).first()
        if row is None:
            raise ResourceMissing(
                f"No such bank_account: '{bank_account_id[:40]}'", param="payment_method"
            )
        status = STATUS_OF[VerificationStatus(row.verification_status)]
        if status is not BankAccountStatus.VERIFIED:
            raise InvalidRequest(
                f"This bank account is {status.value}, not verified, so it cannot be debited.",
                param="payment_method",
                code="bank_account_unverified",
            )

    async def record(self, tx: Transaction, pi: PaymentIntent, now: datetime) -> None:
        """The debit of an intent that has just begun one (PaymentIntent.begin_bank_debit),
        in the intent's transaction, after its row."""
        assert pi.payment_method is not None
        await tx.repo.conn.execute(
            _d.insert().values(
                id=new_id("bd"),
                merchant_id=pi.merchant_id,
                livemode=pi.livemode,
                payment_intent_id=pi.id,
                bank_account_id=pi.payment_method,
                amount=pi.amount,
                currency=pi.currency,
                status="processing",
                return_code=None,
                settles_at=now + self.settle_after,
                created_at=now,
                updated_at=now,
            )
        )

    async def settle_due(self, *, batch: int = 100) -> int:
        """Settle the debits whose settlement date has come (a worker loop runs this): each is
        asked of the rail outside any transaction, then applied in its own. Returns how many
        were settled or returned."""
        now = self.clock.now()
        async with self.uow.reading() as repo:
            due = (
                await repo.conn.execute(
                    select(
                        _d.c.id,
                        _d.c.merchant_id,
                        _d.c.livemode,
                        _d.c.payment_intent_id,
                        _d.c.bank_account_id,
                        _a.c.numbers,
                    )
                    .join(_a, _a.c.id == _d.c.bank_account_id)
                    .where(_d.c.status == "processing", _d.c.settles_at <= now)
                    .order_by(_d.c.settles_at, _d.c.id)
                    .limit(batch)
                )
            ).all()
        done = 0
        for row in due:
            numbers = await open_numbers(
                self.envelope, row.bank_account_id, row.merchant_id, row.numbers
            )
            code = await self.rail.debit_outcome(reference=row.id, numbers=numbers)
            done += await self._apply(
                row.id, row.merchant_id, row.livemode, row.payment_intent_id, code
            )
        return done

    async def _apply(
        self, debit_id: str, merchant_id: str, livemode: bool, pi_id: str, code: str | None
    ) -> bool:
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            pi = await tx.repo.get_payment_intent(merchant_id, pi_id, for_update=True)
            # Conditional: a debit another worker settled meanwhile is not settled twice.
            claimed = await tx.repo.conn.execute(
                update(_d)
                .where(_d.c.id == debit_id, _d.c.status == "processing")
                .values(
                    status="returned" if code else "succeeded", return_code=code, updated_at=now
                )
            )
            if not claimed.rowcount or pi is None:
                return False
            if code is None:
                txs = pi.settle_bank_debit()
            else:
                txs = pi.return_bank_debit(code, RETURN_REASONS.get(code, "returned"))
            await tx.repo.save_payment_intent(pi, now)
            await tx.repo.post(pi.merchant_id, txs, now)
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.BANK_DEBIT_SETTLE,
                    merchant_id=merchant_id,
                    livemode=livemode,
                    resource=("payment_intent", pi.id),
                    outcome=Outcome.FAILURE if code else Outcome.SUCCESS,
                    details={"bank_debit": debit_id, "return_code": code},
                )
            )
            await tx.commit()
        log.info("bank debit settled", bank_debit=debit_id, return_code=code)
        return True
