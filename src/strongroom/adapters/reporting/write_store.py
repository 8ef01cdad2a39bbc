"""The write store, read for reporting's sake: batches for `strongroom report backfill`, and the
standard reports as SQL over PostgreSQL's write-store tables, which the benchmark times against
the reporting stores and tests compare totals with. Nothing served to users runs these.

Where the write store keeps each report's facts:
  volume              payment_intents (day of creation, current status)
  authorization rate  an approval is the ledger's `authorization_hold` transaction (one per
                      approved authorization); a decline is a `failed` authorize operation
  decline reasons     those operations' codes, from the audit event recording their outcome
                      (the intent keeps only its latest decline). With
                      STRONGROOM_AUDIT_PAYMENT_EVENTS off there is none: codes read as null.
  refund rate         payment_intents.amount_received and succeeded refunds, on the payment's day

A projected attempt is dated by its event's commit; here by the operation's or ledger row's
time, taken in the same transaction a moment earlier, so the two can fall on either side of
midnight only for an attempt finished in that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.db import tables as t
from strongroom.adapters.db.engine import Engines
from strongroom.adapters.reporting.port import (
    AuthorizationRow,
    PaymentRow,
    Rebuilt,
    RefundRow,
    ReportName,
    ReportQuery,
    Row,
)
from strongroom.domain.audit import AuditTag
from strongroom.domain.ledger import Movement
from strongroom.domain.model import OperationKind, OperationStatus, RefundStatus

Codes = tuple[str | None, str | None]  # (code, decline_code)

_pi, _re, _lt, _op, _au = (
    t.payment_intents,
    t.refunds,
    t.ledger_transactions,
    t.gateway_operations,
    t.audit_events,
)
_AUTHORIZING_TAGS = (str(AuditTag.PAYMENT_INTENT_CREATE), str(AuditTag.PAYMENT_INTENT_CONFIRM))
_OPERATION = _au.c.details["operation"].as_string()
_CODES = select(
    _OPERATION.label("operation"),
    _au.c.details["code"].as_string().label("code"),
    _au.c.details["decline_code"].as_string().label("decline_code"),
).where(_au.c.outcome == "failure", _au.c.event_type.in_(_AUTHORIZING_TAGS))


@dataclass(frozen=True)
class _Decline:
    operation: str
    payment_intent_id: str
    at: datetime


class WriteStoreReader:
    """Reads the write store in batches of payment intents, each batch with a watermark: the
    seq at or below which every event about those intents is committed and visible, and above
    which none is.

    PostgreSQL commits in any order, so a batch locks its intents FOR SHARE (every writer of an
    intent or its refunds holds the intent's row lock: writers still at work finish first, new
    ones wait) and takes the outbox sequence's last value while the locks are held: an event
    about these intents committed before has a seq at or below it; one committed after the
    locks go gets a higher one. The rows, refunds, ledger holds and failed operations are read
    under the same locks. SQLite has one writer at a time that takes its seq inside its write
    lock, so a read snapshot and the highest seq it shows are enough (`floor`, the highest
    seq the projection has applied, stands in when pruning has emptied the outbox)."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    @property
    def is_postgres(self) -> bool:
        return self.engines.read.dialect.name == "postgresql"

    async def count(self) -> int:
        async with self.engines.read.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(_pi))).scalar_one())

    async def decline_codes(self) -> dict[str, Codes]:
        """Every failed authorization's codes, by operation, in one pass: the audit log has no
        index to look them up batch by batch."""
        async with self.engines.read.connect() as conn:
            rows = (await conn.execute(_CODES)).all()
        return {r.operation: (r.code, r.decline_code) for r in rows if r.operation}

    async def batch(
        self, *, after: str | None, limit: int, floor: int, codes: dict[str, Codes]
    ) -> Rebuilt | None:
        """The next `limit` payment intents with ids above `after`, or None when none are left.
        `codes` is `decline_codes()`; operations that failed since are looked up and added."""
        async with self.engines.read.connect() as conn:
            await conn.begin()
            try:
                query = select(_pi).order_by(_pi.c.id).limit(limit)
                if after is not None:
                    query = query.where(_pi.c.id > after)
                if self.is_postgres:
                    query = query.with_for_update(read=True)
                intents = (await conn.execute(query)).all()
                if not intents:
                    return None
                through = await self._watermark(conn, floor)
                ids = [r.id for r in intents]
                refunds = (
                    await conn.execute(select(_re).where(_re.c.payment_intent_id.in_(ids)))
                ).all()
                holds = (
                    await conn.execute(
                        select(_lt.c.id, _lt.c.payment_intent_id, _lt.c.created_at).where(
                            _lt.c.payment_intent_id.in_(ids),
                            _lt.c.movement == str(Movement.AUTHORIZATION_HOLD),
                        )
                    )
                ).all()
                failed = (
                    await conn.execute(
                        select(_op.c.id, _op.c.payment_intent_id, _op.c.updated_at).where(
                            _op.c.payment_intent_id.in_(ids),
                            _op.c.kind == str(OperationKind.AUTHORIZE),
                            _op.c.status == str(OperationStatus.FAILED),
                        )
                    )
                ).all()
            finally:
                await conn.rollback()  # nothing was written; this lets the locks go
        declines = [_Decline(r.id, r.payment_intent_id, r.updated_at) for r in failed]
        missing = [d for d in declines if d.operation not in codes]
        if missing:
            codes.update(await self._codes_for(missing))
        by_id = {r.id: r for r in intents}
        payments = [
            PaymentRow(
                id=r.id,
                merchant_id=r.merchant_id,
                livemode=r.livemode,
                created_at=r.created_at,
                currency=r.currency,
                gateway=r.gateway,
                status=r.status,
                capture_method=r.capture_method,
                amount=r.amount,
                amount_received=r.amount_received,
                version=through,
            )
            for r in intents
        ]
        refund_rows = [
            RefundRow(
                id=r.id,
                merchant_id=r.merchant_id,
                livemode=r.livemode,
                payment_intent_id=r.payment_intent_id,
                created_at=r.created_at,
                currency=r.currency,
                status=r.status,
                amount=r.amount,
                version=through,
            )
            for r in refunds
        ]
        attempts = [
            _attempt(by_id[h.payment_intent_id], h.id, h.created_at, None, through) for h in holds
        ] + [
            _attempt(
                by_id[d.payment_intent_id],
                d.operation,
                d.at,
                codes.get(d.operation, (None, None)),
                through,
            )
            for d in declines
        ]
        return Rebuilt(
            through=through,
            payment_intent_ids=ids,
            payments=payments,
            refunds=refund_rows,
            authorizations=attempts,
        )

    async def _watermark(self, conn: AsyncConnection, floor: int) -> int:
        if self.is_postgres:
            value = (
                await conn.execute(
                    text(
                        "SELECT pg_sequence_last_value("
                        "pg_get_serial_sequence('outbox', 'seq')::regclass)"
                    )
                )
            ).scalar()
            return int(value or 0)
        newest = (await conn.execute(select(func.max(t.outbox.c.seq)))).scalar()
        return max(int(newest or 0), floor)

    async def _codes_for(self, declines: list[_Decline]) -> dict[str, Codes]:
        intents = sorted({d.payment_intent_id for d in declines})
        async with self.engines.read.connect() as conn:
            rows = (
                await conn.execute(
                    _CODES.where(
                        _au.c.resource_type == "payment_intent", _au.c.resource_id.in_(intents)
                    )
                )
            ).all()
        return {r.operation: (r.code, r.decline_code) for r in rows if r.operation}


def _attempt(
    intent: Any, key: str, at: datetime, declined: Codes | None, through: int
) -> AuthorizationRow:
    code, decline_code = declined or (None, None)
    return AuthorizationRow(
        payment_intent_id=intent.id,
        key=key,
        merchant_id=intent.merchant_id,
        livemode=intent.livemode,
        at=at,
        currency=intent.currency,
        gateway=intent.gateway,
        approved=declined is None,
        code=code,
        decline_code=decline_code,
        seq=through,
    )


# --- the standard reports over the write store (PostgreSQL) --------------------------------------


def _bounds(query: ReportQuery) -> tuple[datetime | None, datetime | None]:
    start = datetime.combine(query.start, time(), UTC) if query.start else None
    end = datetime.combine(query.end + timedelta(days=1), time(), UTC) if query.end else None
    return start, end


def _filters(query: ReportQuery, owner: str, moment: str | None) -> str:
    """WHERE clauses (bound values only; the column names are ours)."""
    clauses = [f"{owner}.livemode = :livemode"]
    if query.merchant_id is not None:
        clauses.append(f"{owner}.merchant_id = :merchant_id")
    if moment is not None and query.start is not None:
        clauses.append(f"{moment} >= :start")
    if moment is not None and query.end is not None:
        clauses.append(f"{moment} < :end")
    return " AND ".join(clauses)


def write_store_sql(name: ReportName, query: ReportQuery) -> str:
    day = "({} AT TIME ZONE 'UTC')::date"
    match name:
        case ReportName.VOLUME:
            return (
                f"SELECT {day.format('pi.created_at')} AS day, pi.currency, pi.gateway, "
                "pi.status, count(*) AS count, sum(pi.amount)::bigint AS amount "
                f"FROM payment_intents pi WHERE {_filters(query, 'pi', 'pi.created_at')} "
                "GROUP BY 1, 2, 3, 4"
            )
        case ReportName.AUTHORIZATION_RATE:
            return (
                "WITH attempts AS ("
                "SELECT lt.created_at AS at, pi.currency, pi.gateway, 1 AS approved "
                "FROM ledger_transactions lt "
                "JOIN payment_intents pi ON pi.id = lt.payment_intent_id "
                "WHERE lt.movement = 'authorization_hold' AND "
                f"{_filters(query, 'pi', 'lt.created_at')} "
                "UNION ALL "
                "SELECT op.updated_at, pi.currency, pi.gateway, 0 "
                "FROM gateway_operations op "
                "JOIN payment_intents pi ON pi.id = op.payment_intent_id "
                "WHERE op.kind = 'authorize' AND op.status = 'failed' AND "
                f"{_filters(query, 'pi', 'op.updated_at')}) "
                f"SELECT {day.format('at')} AS day, currency, gateway, count(*) AS attempts, "
                "sum(approved)::bigint AS approved FROM attempts GROUP BY 1, 2, 3"
            )
        case ReportName.DECLINE_REASONS:
            return (
                "SELECT a.details ->> 'code' AS code, "
                "a.details ->> 'decline_code' AS decline_code, "
                "count(*) AS count FROM gateway_operations op "
                "JOIN payment_intents pi ON pi.id = op.payment_intent_id "
                "LEFT JOIN audit_events a ON a.resource_type = 'payment_intent' "
                "AND a.resource_id = op.payment_intent_id AND a.outcome = 'failure' "
                f"AND a.event_type IN {_AUTHORIZING_TAGS!r} AND a.details ->> 'operation' = op.id "
                "WHERE op.kind = 'authorize' AND op.status = 'failed' AND "
                f"{_filters(query, 'pi', 'op.updated_at')} GROUP BY 1, 2"
            )
        case ReportName.REFUND_RATE:
            return (
                f"SELECT {day.format('pi.created_at')} AS day, pi.currency, "
                "sum(pi.amount_received)::bigint AS captured_amount, "
                "coalesce(sum(r.refunded_amount), 0)::bigint AS refunded_amount, "
                "coalesce(sum(r.refunds), 0)::bigint AS refunds FROM payment_intents pi "
                "LEFT JOIN (SELECT re.payment_intent_id, sum(re.amount) AS refunded_amount, "
                f"count(*) AS refunds FROM refunds re WHERE re.status = '{RefundStatus.SUCCEEDED}' "
                f"AND {_filters(query, 're', None)} GROUP BY re.payment_intent_id) r "
                "ON r.payment_intent_id = pi.id "
                f"WHERE pi.amount_received > 0 AND {_filters(query, 'pi', 'pi.created_at')} "
                "GROUP BY 1, 2"
            )


def write_store_params(query: ReportQuery) -> dict[str, Any]:
    start, end = _bounds(query)
    params: dict[str, Any] = {"livemode": query.livemode}
    if query.merchant_id is not None:
        params["merchant_id"] = query.merchant_id
    if start is not None:
        params["start"] = start
    if end is not None:
        params["end"] = end
    return params


async def write_store_report(
    conn: AsyncConnection, name: ReportName, query: ReportQuery
) -> list[Row]:
    """The report computed from the write store (PostgreSQL): for benchmarks and tests."""
    if conn.dialect.name != "postgresql":
        raise ValueError("the write-store report SQL is PostgreSQL's")
    result = await conn.execute(text(write_store_sql(name, query)), write_store_params(query))
    return [dict(r._mapping) for r in result]
