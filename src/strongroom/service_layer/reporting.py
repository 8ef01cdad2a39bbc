"""Reporting, the read side: the `reporting` event consumer (the projector), the standard
reports, and the backfill that rebuilds the reporting store from the write store.

What each event means for reporting (see domain/model.py for which transition raises which):
  payment_intent.*                    the intent's newest state (highest seq wins)
  payment_intent.amount_capturable_updated, and .succeeded when capture_method is automatic:
                                      an approved authorization attempt
  payment_intent.succeeded (manual)   a capture, not an attempt
  payment_intent.payment_failed       a declined attempt, with last_payment_error's codes
  refund.*                            the refund's newest state
Anything else only moves the projection's progress (its lag).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from strongroom.adapters.db.engine import Engines
from strongroom.adapters.reporting.port import (
    AuthorizationRow,
    Changes,
    Lag,
    PaymentRow,
    RefundRow,
    ReportingStore,
    ReportName,
    ReportQuery,
    Row,
)
from strongroom.adapters.reporting.write_store import WriteStoreReader
from strongroom.domain.clock import Clock
from strongroom.domain.errors import InvalidRequest, ResourceMissing
from strongroom.domain.events import Event, EventType
from strongroom.domain.model import CaptureMethod

BACKFILL_BATCH = 1000
CACHED_REPORTS = 1024  # distinct (report, query) results a process keeps at most

# Each report's columns, in order; the first `KEYS[name]` of them identify a row.
COLUMNS: dict[ReportName, tuple[str, ...]] = {
    ReportName.VOLUME: ("day", "currency", "gateway", "status", "count", "amount"),
    ReportName.AUTHORIZATION_RATE: (
        "day",
        "currency",
        "gateway",
        "attempts",
        "approved",
        "declined",
        "rate",
    ),
    ReportName.DECLINE_REASONS: ("code", "decline_code", "count"),
    ReportName.REFUND_RATE: (
        "day",
        "currency",
        "captured_amount",
        "refunded_amount",
        "refunds",
        "rate",
    ),
}


def parse_report_name(name: str) -> ReportName:
    try:
        return ReportName(name)
    except ValueError:
        known = ", ".join(ReportName)
        raise ResourceMissing(f"No such report: '{name}'. Reports: {known}.", param="id") from None


def check_range(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidRequest("'from' must be on or before 'to'.", param="from")


# --- the projector ------------------------------------------------------------------------------


def _moment(epoch_seconds: Any, fallback: datetime) -> datetime:
    return (
        datetime.fromtimestamp(int(epoch_seconds), UTC) if epoch_seconds is not None else fallback
    )


def _payment(event: Event) -> PaymentRow:
    d = event.data
    return PaymentRow(
        id=event.aggregate_id,
        merchant_id=event.merchant_id,
        livemode=event.livemode,
        created_at=_moment(d.get("created"), event.created_at),
        currency=str(d["currency"]),
        gateway=str(d.get("gateway") or "sandbox"),
        status=str(d["status"]),
        capture_method=str(d["capture_method"]),
        amount=int(d["amount"]),
        amount_received=int(d.get("amount_received") or 0),
        version=event.seq,
    )


def _attempt(event: Event, payment: PaymentRow) -> AuthorizationRow | None:
    approved = event.type == EventType.PAYMENT_INTENT_AMOUNT_CAPTURABLE_UPDATED or (
        event.type == EventType.PAYMENT_INTENT_SUCCEEDED
        and payment.capture_method == CaptureMethod.AUTOMATIC
    )
    declined = event.type == EventType.PAYMENT_INTENT_PAYMENT_FAILED
    if not (approved or declined):
        return None
    error = event.data.get("last_payment_error") or {}
    return AuthorizationRow(
        payment_intent_id=payment.id,
        key=event.id,
        merchant_id=event.merchant_id,
        livemode=event.livemode,
        at=event.created_at,
        currency=payment.currency,
        gateway=payment.gateway,
        approved=approved,
        code=None if approved else error.get("code"),
        decline_code=None if approved else error.get("decline_code"),
        seq=event.seq,
    )


def _refund(event: Event) -> RefundRow:
    d = event.data
    return RefundRow(
        id=event.aggregate_id,
        merchant_id=event.merchant_id,
        livemode=event.livemode,
        payment_intent_id=str(d["payment_intent"]),
        created_at=_moment(d.get("created"), event.created_at),
        currency=str(d["currency"]),
        status=str(d["status"]),
        amount=int(d["amount"]),
        version=event.seq,
    )


def project(events: Iterable[Event], applied_at: datetime | None = None) -> Changes:
    """What a batch of events means for the reporting store: per object only the newest state
    in the batch (the store then compares it with what it holds)."""
    payments: dict[str, PaymentRow] = {}
    refunds: dict[str, RefundRow] = {}
    attempts: dict[str, AuthorizationRow] = {}
    newest: Event | None = None
    for event in events:
        if newest is None or event.seq > newest.seq:
            newest = event
        if event.aggregate_type == "payment_intent":
            payment = _payment(event)
            if payment.id not in payments or payments[payment.id].version < payment.version:
                payments[payment.id] = payment
            attempt = _attempt(event, payment)
            if attempt is not None:
                attempts[attempt.key] = attempt
        elif event.aggregate_type == "refund":
            refund = _refund(event)
            if refund.id not in refunds or refunds[refund.id].version < refund.version:
                refunds[refund.id] = refund
    return Changes(
        payments=list(payments.values()),
        refunds=list(refunds.values()),
        authorizations=list(attempts.values()),
        newest_seq=newest.seq if newest else 0,
        newest_created_at=newest.created_at if newest else None,
        applied_at=applied_at,
    )


# --- reports ------------------------------------------------------------------------------------


def _rate(part: int, whole: int) -> float | None:
    """A ratio for people to read (not money): four decimal places, None when undefined."""
    return round(part / whole, 4) if whole else None


def _day(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def shape(name: ReportName, rows: Iterable[Row]) -> list[Row]:
    """Store rows → the report's rows: days as ISO dates, integer measures, rates, a fixed
    order; the same whichever store (or the write store) computed them."""
    shaped: list[Row] = []
    for row in rows:
        match name:
            case ReportName.VOLUME:
                out = {
                    "day": _day(row["day"]),
                    "currency": row["currency"],
                    "gateway": row["gateway"],
                    "status": row["status"],
                    "count": int(row["count"]),
                    "amount": int(row["amount"]),
                }
            case ReportName.AUTHORIZATION_RATE:
                attempts, approved = int(row["attempts"]), int(row["approved"])
                out = {
                    "day": _day(row["day"]),
                    "currency": row["currency"],
                    "gateway": row["gateway"],
                    "attempts": attempts,
                    "approved": approved,
                    "declined": attempts - approved,
                    "rate": _rate(approved, attempts),
                }
            case ReportName.DECLINE_REASONS:
                out = {
                    "code": row["code"] or None,
                    "decline_code": row["decline_code"] or None,
                    "count": int(row["count"]),
                }
            case ReportName.REFUND_RATE:
                captured, refunded = int(row["captured_amount"]), int(row["refunded_amount"])
                out = {
                    "day": _day(row["day"]),
                    "currency": row["currency"],
                    "captured_amount": captured,
                    "refunded_amount": refunded,
                    "refunds": int(row["refunds"]),
                    "rate": _rate(refunded, captured),
                }
        shaped.append(out)
    if name is ReportName.DECLINE_REASONS:
        shaped.sort(key=lambda r: (-r["count"], r["code"] or "", r["decline_code"] or ""))
    else:
        keys = [c for c in COLUMNS[name] if c in ("day", "currency", "gateway", "status")]
        shaped.sort(key=lambda r: tuple(r[k] for k in keys))
    return shaped


def to_csv(name: ReportName, rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS[name])
    for row in rows:
        writer.writerow("" if row[c] is None else row[c] for c in COLUMNS[name])
    return out.getvalue()


@dataclass(frozen=True)
class Report:
    name: ReportName
    rows: list[Row]
    computed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "report",
            "name": str(self.name),
            "computed_at": int(self.computed_at.timestamp()),
            "rows": self.rows,
        }


class ReportCache:
    """Recent report results, per report and query, each reused for at most `max_age` on the
    clock. Reports are eventually consistent anyway (the projection's lag is published), and a
    dashboard asking every second for the same panels would otherwise take CPU from the
    payments that share the process. Concurrent asks for the same result share one query."""

    def __init__(self, clock: Clock, max_age: timedelta, size: int = CACHED_REPORTS) -> None:
        self.clock = clock
        self.max_age = max_age
        self.size = size
        self._entries: OrderedDict[
            tuple[ReportName, ReportQuery], tuple[datetime, asyncio.Future[Report]]
        ] = OrderedDict()

    async def get(
        self,
        name: ReportName,
        query: ReportQuery,
        compute: Callable[[], Awaitable[Report]],
    ) -> Report:
        key = (name, query)
        now = self.clock.now()
        entry = self._entries.get(key)
        if entry is not None and (not entry[1].done() or now - entry[0] < self.max_age):
            self._entries.move_to_end(key)
            return await asyncio.shield(entry[1])
        future: asyncio.Future[Report] = asyncio.ensure_future(compute())
        self._entries[key] = (now, future)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        future.add_done_callback(lambda done: self._forget_failure(key, done))
        return await asyncio.shield(future)

    def _forget_failure(
        self, key: tuple[ReportName, ReportQuery], done: asyncio.Future[Report]
    ) -> None:
        """A failed query (the store down, say) is asked again next time, never replayed."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] is done and (done.cancelled() or done.exception()):
            del self._entries[key]


@dataclass(frozen=True)
class BackfillSummary:
    payment_intents: int
    refunds: int
    authorization_attempts: int
    batches: int
    through: int  # the last batch's watermark

    def as_dict(self) -> dict[str, int]:
        return {
            "payment_intents": self.payment_intents,
            "refunds": self.refunds,
            "authorization_attempts": self.authorization_attempts,
            "batches": self.batches,
            "through": self.through,
        }


Progress = Callable[[int, int], None]  # (done, total)


class Reporting:
    """The `reporting` consumer and the reports. Handlers are idempotent by event id: the
    store keeps the newest version of each object and each attempt once."""

    def __init__(
        self,
        store: ReportingStore,
        engines: Engines,
        clock: Clock,
        *,
        cache_for: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.engines = engines
        self.clock = clock
        self._cache = ReportCache(clock, cache_for)

    async def apply(self, events: Sequence[Event]) -> None:
        """The `reporting` consumer: a batch of events in one write (any order, duplicates
        welcome)."""
        if events:
            await self.store.apply(project(events, applied_at=self.clock.now()))

    async def report(self, name: ReportName, query: ReportQuery, *, fresh: bool = False) -> Report:
        """The report, possibly as computed up to `cache_for` ago (see ReportCache); `fresh`
        asks the store now, for exports and the command line."""
        check_range(query.start, query.end)

        async def compute() -> Report:
            computed_at = self.clock.now()
            return Report(name, shape(name, await self.store.query(name, query)), computed_at)

        if fresh:
            return await compute()
        return await self._cache.get(name, query, compute)

    async def lag(self) -> Lag:
        return await self.store.lag()

    async def backfill(
        self, progress: Progress | None = None, *, batch_size: int = BACKFILL_BATCH
    ) -> BackfillSummary:
        """Rebuild the reporting store from the write store's tables (not the outbox, which is
        pruned): every payment intent, its refunds and its authorization attempts, in batches.
        Safe to run again (a rebuilt row replaces the same row) and while events keep arriving:
        each batch carries the watermark seq it was read at (see WriteStoreReader), the store
        keeps whichever of it and a projected event is newer, and rebuilt attempts replace the
        projected ones at or below the watermark, so none is lost or counted twice."""
        reader = WriteStoreReader(self.engines)
        total = await reader.count()
        codes = await reader.decline_codes()
        after: str | None = None
        intents = refunds = attempts = batches = through = 0
        if progress:
            progress(0, total)
        while True:
            floor = (await self.store.lag()).seq
            batch = await reader.batch(after=after, limit=batch_size, floor=floor, codes=codes)
            if batch is None:
                break
            await self.store.rebuild(batch)
            after = batch.payment_intent_ids[-1]
            intents += len(batch.payments)
            refunds += len(batch.refunds)
            attempts += len(batch.authorizations)
            batches += 1
            through = batch.through
            if progress:
                progress(intents, max(total, intents))
        return BackfillSummary(intents, refunds, attempts, batches, through)

    async def close(self) -> None:
        await self.store.close()
