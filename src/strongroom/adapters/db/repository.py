"""Reads and writes of domain objects over one SQLAlchemy connection (one transaction).

Every query that reads a merchant's object takes the merchant id, so a caller can never reach
another tenant's rows by guessing an id.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.db import audit_store
from strongroom.adapters.db import tables as t
from strongroom.domain.audit import AuditEvent
from strongroom.domain.events import EventType
from strongroom.domain.ids import new_id
from strongroom.domain.ledger import LedgerTransaction
from strongroom.domain.model import (
    CaptureMethod,
    Customer,
    GatewayOperation,
    LegalEntity,
    Merchant,
    OperationKind,
    OperationStatus,
    PaymentIntent,
    PIStatus,
    Refund,
    RefundStatus,
)

# Statements on the payment path are built once: SQLAlchemy then reuses their compiled form
# and cache key instead of rebuilding both on every call.
_pis = t.payment_intents
_ops = t.gateway_operations
_keys = t.idempotency_keys
_PI_BY_ID = select(_pis).where(
    _pis.c.id == bindparam("id"), _pis.c.merchant_id == bindparam("merchant_id")
)
_PI_BY_ID_LOCKED = _PI_BY_ID.with_for_update()
_INSERT_PI = _pis.insert()
_UPDATE_PI = update(_pis).where(_pis.c.id == bindparam("b_id"))
_INSERT_OP = _ops.insert()
_FINISH_OP = (
    update(_ops)
    .where(_ops.c.id == bindparam("b_id"), _ops.c.status == OperationStatus.STARTED)
    .values(status=bindparam("b_status"), updated_at=bindparam("b_now"), locked_until=None)
    .returning(_ops.c.id)
)
_INSERT_LEDGER_TX = t.ledger_transactions.insert()
_INSERT_LEDGER_ENTRY = t.ledger_entries.insert()
_API_KEY_BY_HASH = (
    select(t.api_keys, t.merchants.c.rate_limits)
    .join(t.merchants, t.merchants.c.id == t.api_keys.c.merchant_id)
    .where(t.api_keys.c.key_hash == bindparam("hash"))
)
_KEY_LOCKED = (
    select(_keys)
    .where(
        _keys.c.merchant_id == bindparam("merchant_id"),
        _keys.c.livemode == bindparam("livemode"),
        _keys.c.key == bindparam("key"),
    )
    .with_for_update()
)
_FINISH_KEY = (
    update(_keys)
    .where(_keys.c.id == bindparam("b_id"))
    .values(
        response_status=bindparam("b_status"), response_body=bindparam("b_body"), locked_until=None
    )
)
_INSERT_KEY = {
    dialect: insert(_keys)
    .on_conflict_do_nothing(index_elements=["merchant_id", "livemode", "key"])
    .returning(_keys.c.id)
    for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_Moded = TypeVar("_Moded", Customer, PaymentIntent, Refund)
_PI_IMMUTABLE = frozenset({"id", "merchant_id", "created_at", "livemode", "currency"})


class Repository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        # Events raised by the aggregates this transaction wrote, for the outbox at commit.
        self.raised: list[tuple[EventType, Customer | PaymentIntent | Refund]] = []

    def _take_events(self, aggregate: Customer | PaymentIntent | Refund) -> None:
        self.raised.extend((event, aggregate) for event in aggregate.take_events())

    # --- merchants and keys --------------------------------------------------------------------
    async def add_merchant(self, merchant: Merchant) -> None:
        le = merchant.legal_entity
        await self.conn.execute(
            t.merchants.insert().values(
                id=merchant.id, name=merchant.name, created_at=merchant.created_at
            )
        )
        await self.conn.execute(
            t.legal_entities.insert().values(
                id=le.id,
                merchant_id=merchant.id,
                legal_name=le.legal_name,
                country=le.country,
                created_at=merchant.created_at,
            )
        )

    async def get_merchant(self, merchant_id: str) -> Merchant | None:
        return await self._merchant_where(t.merchants.c.id == merchant_id)

    async def merchant_rate_limits(self, merchant_id: str) -> dict[str, str] | None:
        limits = await self.conn.execute(
            select(t.merchants.c.rate_limits).where(t.merchants.c.id == merchant_id)
        )
        value: dict[str, str] | None = limits.scalar_one()
        return value

    async def set_merchant_rate_limits(
        self, merchant_id: str, limits: dict[str, str] | None
    ) -> None:
        await self.conn.execute(
            update(t.merchants).where(t.merchants.c.id == merchant_id).values(rate_limits=limits)
        )

    async def refund_step_up_amount(self, merchant_id: str) -> int:
        """Operators' refunds above this (minor units) need more (see the policy)."""
        merchants = t.merchants
        amount = await self.conn.execute(
            select(merchants.c.refund_step_up_amount).where(merchants.c.id == merchant_id)
        )
        return int(amount.scalar_one())

    async def find_merchant_by_name(self, name: str) -> Merchant | None:
        return await self._merchant_where(t.merchants.c.name == name)

    async def _merchant_where(self, condition: Any) -> Merchant | None:
        row = (
            await self.conn.execute(
                select(
                    t.merchants,
                    t.legal_entities.c.id.label("le_id"),
                    t.legal_entities.c.legal_name,
                    t.legal_entities.c.country,
                )
                .join(t.legal_entities, t.legal_entities.c.merchant_id == t.merchants.c.id)
                .where(condition)
                .order_by(t.merchants.c.created_at)
            )
        ).first()
        if row is None:
            return None
        return Merchant(
            id=row.id,
            name=row.name,
            legal_entity=LegalEntity(row.le_id, row.legal_name, row.country),
            created_at=row.created_at,
        )

    async def add_api_key(self, values: dict[str, Any]) -> None:
        await self.conn.execute(t.api_keys.insert().values(**values))

    async def find_api_key(self, key_hash: str) -> Row[Any] | None:
        return (await self.conn.execute(_API_KEY_BY_HASH, {"hash": key_hash})).first()

    async def revoke_api_key(self, key_id: str, now: datetime) -> tuple[str, bool] | None:
        """Revoke an active key; its merchant's id and mode, or None when there was no such key."""
        row = (
            await self.conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(t.api_keys.c.merchant_id, t.api_keys.c.livemode)
            )
        ).first()
        return (row.merchant_id, row.livemode) if row is not None else None

    # --- customers -----------------------------------------------------------------------------
    async def add_customer(self, c: Customer) -> None:
        self._take_events(c)
        await self.conn.execute(t.customers.insert().values(**_columns(c)))

    async def get_customer(
        self, merchant_id: str, customer_id: str, *, livemode: bool | None = None
    ) -> Customer | None:
        row = (
            await self.conn.execute(
                select(t.customers).where(
                    t.customers.c.id == customer_id, t.customers.c.merchant_id == merchant_id
                )
            )
        ).first()
        customer = Customer(**row._mapping) if row is not None else None
        return _in_mode(customer, livemode)

    # --- payment intents -----------------------------------------------------------------------
    async def add_payment_intent(self, pi: PaymentIntent, now: datetime) -> None:
        self._take_events(pi)
        await self.conn.execute(_INSERT_PI, {**_pi_values(pi), "updated_at": now})

    async def get_payment_intent(
        self,
        merchant_id: str,
        pi_id: str,
        *,
        livemode: bool | None = None,
        for_update: bool = False,
    ) -> PaymentIntent | None:
        """The intent, if it belongs to the merchant (and to `livemode`, when given)."""
        query = _PI_BY_ID_LOCKED if for_update else _PI_BY_ID
        row = (await self.conn.execute(query, {"id": pi_id, "merchant_id": merchant_id})).first()
        return _in_mode(_pi_from_row(row) if row is not None else None, livemode)

    async def find_payment_intent_by_reference(
        self, merchant_id: str, account_id: str | None, reference: str
    ) -> PaymentIntent | None:
        """The merchant's intent whose charge at this gateway account is `reference` (what a
        gateway webhook names)."""
        pis = t.payment_intents
        account = (
            pis.c.gateway_account_id.is_(None)
            if account_id is None
            else pis.c.gateway_account_id == account_id
        )
        row = (
            await self.conn.execute(
                select(pis).where(
                    pis.c.merchant_id == merchant_id, pis.c.gateway_reference == reference, account
                )
            )
        ).first()
        return _pi_from_row(row) if row is not None else None

    async def save_payment_intent(self, pi: PaymentIntent, now: datetime) -> None:
        self._take_events(pi)
        values = {k: v for k, v in _pi_values(pi).items() if k not in _PI_IMMUTABLE}
        await self.conn.execute(_UPDATE_PI, {**values, "updated_at": now, "b_id": pi.id})

    async def list_payment_intents(
        self, merchant_id: str, livemode: bool, *, limit: int, starting_after: str | None
    ) -> tuple[list[PaymentIntent], bool] | None:
        """Newest first. Returns None when `starting_after` names no intent in this scope."""
        pis = t.payment_intents
        in_scope = (pis.c.merchant_id == merchant_id, pis.c.livemode == livemode)
        query = select(pis).where(*in_scope)
        if starting_after is not None:
            cursor = (
                await self.conn.execute(
                    select(pis.c.created_at, pis.c.id).where(pis.c.id == starting_after, *in_scope)
                )
            ).first()
            if cursor is None:
                return None
            query = query.where(
                or_(
                    pis.c.created_at < cursor.created_at,
                    and_(pis.c.created_at == cursor.created_at, pis.c.id < cursor.id),
                )
            )
        rows = (
            await self.conn.execute(
                query.order_by(pis.c.created_at.desc(), pis.c.id.desc()).limit(limit + 1)
            )
        ).all()
        return [_pi_from_row(r) for r in rows[:limit]], len(rows) > limit

    # --- refunds -------------------------------------------------------------------------------
    async def add_refund(self, r: Refund, now: datetime) -> None:
        self._take_events(r)
        await self.conn.execute(t.refunds.insert().values(**_columns(r), updated_at=now))

    async def get_refund(
        self,
        merchant_id: str,
        refund_id: str,
        *,
        livemode: bool | None = None,
        for_update: bool = False,
    ) -> Refund | None:
        query = select(t.refunds).where(
            t.refunds.c.id == refund_id, t.refunds.c.merchant_id == merchant_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        if row is None:
            return None
        values = dict(row._mapping)
        values.pop("updated_at")
        values["status"] = RefundStatus(values["status"])
        return _in_mode(Refund(**values), livemode)

    async def save_refund(self, r: Refund, now: datetime) -> None:
        self._take_events(r)
        await self.conn.execute(
            update(t.refunds)
            .where(t.refunds.c.id == r.id)
            .values(
                status=r.status,
                failure_reason=r.failure_reason,
                gateway_reference=r.gateway_reference,
                updated_at=now,
            )
        )

    # --- gateway operations --------------------------------------------------------------------
    async def add_operation(self, op: GatewayOperation) -> None:
        await self.conn.execute(_INSERT_OP, vars(op))

    async def get_operation(self, op_id: str) -> GatewayOperation | None:
        query = select(t.gateway_operations).where(t.gateway_operations.c.id == op_id)
        row = (await self.conn.execute(query)).first()
        return _op_from_row(row) if row is not None else None

    async def operation_for_refund(self, refund_id: str) -> GatewayOperation | None:
        row = (
            await self.conn.execute(
                select(t.gateway_operations).where(t.gateway_operations.c.refund_id == refund_id)
            )
        ).first()
        return _op_from_row(row) if row is not None else None

    async def finish_operation(self, op_id: str, status: OperationStatus, now: datetime) -> bool:
        """Mark a started operation finished; False when another process finished it first.
        The conditional UPDATE is the guard that makes applying an answer happen once."""
        result = await self.conn.execute(
            _FINISH_OP, {"b_id": op_id, "b_status": status, "b_now": now}
        )
        return result.first() is not None

    async def reroute_operation(self, op_id: str, request: dict[str, Any], now: datetime) -> bool:
        """Point a started authorization at another gateway (its first was never reached);
        False when it has finished meanwhile."""
        ops = t.gateway_operations
        result = await self.conn.execute(
            update(ops)
            .where(ops.c.id == op_id, ops.c.status == OperationStatus.STARTED.value)
            .values(request=request, updated_at=now)
        )
        return bool(result.rowcount)

    async def lease_stale_operations(
        self, *, now: datetime, older_than: datetime, lease_until: datetime, limit: int
    ) -> list[GatewayOperation]:
        """Claim unfinished operations for recovery. The conditional UPDATE is the lease: two
        workers racing for one row cannot both win it."""
        ops = t.gateway_operations
        candidates = (
            (
                await self.conn.execute(
                    select(ops.c.id)
                    .where(
                        ops.c.status == OperationStatus.STARTED,
                        ops.c.updated_at <= older_than,
                        or_(ops.c.locked_until.is_(None), ops.c.locked_until <= now),
                    )
                    .order_by(ops.c.updated_at)
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
        claimed: list[GatewayOperation] = []
        for op_id in candidates:
            row = (
                await self.conn.execute(
                    update(ops)
                    .where(
                        ops.c.id == op_id,
                        ops.c.status == OperationStatus.STARTED,
                        or_(ops.c.locked_until.is_(None), ops.c.locked_until <= now),
                    )
                    .values(locked_until=lease_until)
                    .returning(*ops.c)
                )
            ).first()
            if row is not None:
                claimed.append(_op_from_row(row))
        return claimed

    # --- ledger --------------------------------------------------------------------------------
    async def post(self, merchant_id: str, txs: list[LedgerTransaction], now: datetime) -> None:
        if not txs:
            return
        tx_rows: list[dict[str, Any]] = []
        entry_rows: list[dict[str, Any]] = []
        for tx in txs:
            tx_id = new_id("ltx")
            tx_rows.append(
                {
                    "id": tx_id,
                    "merchant_id": merchant_id,
                    "movement": tx.movement,
                    "payment_intent_id": tx.payment_intent_id,
                    "refund_id": tx.refund_id,
                    "created_at": now,
                }
            )
            entry_rows.extend(
                {
                    "transaction_id": tx_id,
                    "merchant_id": merchant_id,
                    "account": p.account,
                    "currency": p.currency,
                    "amount": p.amount,
                }
                for p in tx.postings
            )
        await self.conn.execute(_INSERT_LEDGER_TX, tx_rows)
        await self.conn.execute(_INSERT_LEDGER_ENTRY, entry_rows)

    async def balances(self, merchant_id: str) -> dict[tuple[str, str], int]:
        """(account, currency) → balance, debit positive."""
        e = t.ledger_entries
        rows = await self.conn.execute(
            select(e.c.account, e.c.currency, func.sum(e.c.amount))
            .where(e.c.merchant_id == merchant_id)
            .group_by(e.c.account, e.c.currency)
        )
        out: dict[tuple[str, str], int] = defaultdict(int)
        for account, currency, total in rows:
            out[(account, currency)] = int(total)
        return out

    # --- audit ---------------------------------------------------------------------------------
    async def add_audit_event(self, event: AuditEvent) -> None:
        """In the caller's transaction, so the record and the change it records commit together."""
        await audit_store.add_event(self.conn, event)

    # --- idempotency keys ----------------------------------------------------------------------
    async def insert_idempotency_key(self, values: dict[str, Any]) -> int | None:
        """Insert unless the (merchant, key) pair exists; the new row's id, or None.
        On PostgreSQL a concurrent insert of the same key waits for ours to commit."""
        statement = _INSERT_KEY[self.conn.dialect.name]
        row_id = (await self.conn.execute(statement, values)).scalar()
        return int(row_id) if row_id is not None else None

    async def get_idempotency_key(
        self, merchant_id: str, livemode: bool, key: str
    ) -> Row[Any] | None:
        return (
            await self.conn.execute(
                _KEY_LOCKED, {"merchant_id": merchant_id, "livemode": livemode, "key": key}
            )
        ).first()

    async def finish_idempotency_key(self, row_id: int, status: int, body: str) -> None:
        await self.conn.execute(_FINISH_KEY, {"b_id": row_id, "b_status": status, "b_body": body})

    async def update_idempotency_key(self, row_id: int, **values: Any) -> None:
        k = t.idempotency_keys
        await self.conn.execute(update(k).where(k.c.id == row_id).values(**values))

    async def prune_idempotency_keys(self, older_than: datetime) -> int:
        k = t.idempotency_keys
        result = await self.conn.execute(delete(k).where(k.c.created_at < older_than))
        return int(result.rowcount)


def _in_mode(obj: _Moded | None, livemode: bool | None) -> _Moded | None:
    """Test and live objects are invisible to each other's keys, as at Stripe."""
    if obj is None or (livemode is not None and obj.livemode != livemode):
        return None
    return obj


def _columns(obj: object) -> dict[str, Any]:
    """A domain object's column values: its fields, without what it carries in passing (the
    events it raised, which go to the outbox)."""
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def _pi_values(pi: PaymentIntent) -> dict[str, Any]:
    values = _columns(pi)
    values["status"] = str(pi.status)
    values["capture_method"] = str(pi.capture_method)
    return values


def _pi_from_row(row: Row[Any]) -> PaymentIntent:
    values = dict(row._mapping)
    values.pop("updated_at")
    values["status"] = PIStatus(values["status"])
    values["capture_method"] = CaptureMethod(values["capture_method"])
    return PaymentIntent(**values)


def _op_from_row(row: Row[Any]) -> GatewayOperation:
    values = dict(row._mapping)
    values["kind"] = OperationKind(values["kind"])
    values["status"] = OperationStatus(values["status"])
    return GatewayOperation(**values)
