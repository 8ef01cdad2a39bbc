"""The reporting store (DuckDB and ClickHouse): the projector keeps the newest state whatever
order events arrive in and counts each once; the standard reports give exact figures on every
store and agree with the same reports computed from the write store (PostgreSQL); backfill
rebuilds what live projection built, even with events still arriving; the API route and the
`strongroom report` command serve them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from strongroom.adapters.db import tables as t
from strongroom.adapters.reporting.clickhouse import ClickHouseStore
from strongroom.adapters.reporting.duckdb import DuckDBStore
from strongroom.adapters.reporting.port import (
    AuthorizationRow,
    Rebuilt,
    ReportingStore,
    ReportName,
    ReportQuery,
)
from strongroom.adapters.reporting.write_store import write_store_report
from strongroom.bootstrap import Container
from strongroom.domain.errors import CardError
from strongroom.domain.events import Event, EventType
from strongroom.domain.model import CaptureMethod, PaymentIntent, Refund
from strongroom.service_layer import commands as c
from strongroom.service_layer.merchants import KeyKind
from strongroom.service_layer.reporting import COLUMNS, Reporting, project, shape
from strongroom.settings import Settings
from tests.integration.test_cli import cli
from tests.support import FakeClock, service_missing

CLICKHOUSE_HOST = "127.0.0.1"
CLICKHOUSE_PORT = 9000
DAY1 = date(2026, 1, 1)
DAY2 = date(2026, 1, 2)


# --- stores ---------------------------------------------------------------------------------------


def _clickhouse_admin() -> Any:
    from clickhouse_driver import Client  # type: ignore[import-untyped]

    return Client(CLICKHOUSE_HOST, CLICKHOUSE_PORT, connect_timeout=3)


@pytest.fixture
def clickhouse_url() -> Iterator[str]:
    """A uniquely named ClickHouse database for this test, dropped after."""
    admin = _clickhouse_admin()
    try:
        admin.execute("SELECT 1")
    except Exception as exc:
        service_missing(f"ClickHouse at {CLICKHOUSE_HOST}:{CLICKHOUSE_PORT}", repr(exc))
    name = f"strongroom_test_{uuid.uuid4().hex[:12]}"
    try:
        yield f"clickhouse://{CLICKHOUSE_HOST}:{CLICKHOUSE_PORT}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.disconnect()


@pytest.fixture(params=["duckdb", "clickhouse"])
def reporting_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'reporting.duckdb'}"
    url: str = request.getfixturevalue("clickhouse_url")
    return url


def _store(url: str) -> ReportingStore:
    if url.startswith("duckdb://"):
        return DuckDBStore.from_url(url)
    return ClickHouseStore.from_url(url)


@pytest.fixture
async def store(reporting_url: str) -> AsyncIterator[ReportingStore]:
    built = _store(reporting_url)
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def settings(database_url: str, kms_url: str, reporting_url: str) -> Settings:
    """The shared fixture's settings, with this test's own reporting store."""
    return Settings(
        database_url=database_url,
        env="test",
        db_pool_size=20,
        kms_url=kms_url,
        reporting_url=reporting_url,
    )


# --- events by hand -------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pi_event(
    seq: int,
    event_type: EventType,
    pi: str,
    *,
    status: str,
    amount: int = 1000,
    received: int = 0,
    currency: str = "usd",
    gateway: str = "sandbox",
    capture: str = "automatic",
    merchant: str = "acct_a",
    livemode: bool = False,
    created: datetime = T0,
    at: datetime | None = None,
    error: tuple[str, str | None] | None = None,
) -> Event:
    data = {
        "id": pi,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": received,
        "currency": currency,
        "status": status,
        "capture_method": capture,
        "gateway": gateway,
        "last_payment_error": (
            {"type": "card_error", "code": error[0], "decline_code": error[1]} if error else None
        ),
        "livemode": livemode,
        "created": int(created.timestamp()),
    }
    return Event(
        seq=seq,
        id=f"evt_{seq}",
        type=str(event_type),
        merchant_id=merchant,
        livemode=livemode,
        aggregate_type="payment_intent",
        aggregate_id=pi,
        created_at=at or created,
        data=data,
    )


def refund_event(
    seq: int,
    event_type: EventType,
    refund: str,
    pi: str,
    *,
    status: str,
    amount: int,
    currency: str = "usd",
    merchant: str = "acct_a",
    created: datetime = T0 + timedelta(days=1),
) -> Event:
    return Event(
        seq=seq,
        id=f"evt_{seq}",
        type=str(event_type),
        merchant_id=merchant,
        livemode=False,
        aggregate_type="refund",
        aggregate_id=refund,
        created_at=created,
        data={
            "id": refund,
            "object": "refund",
            "amount": amount,
            "currency": currency,
            "payment_intent": pi,
            "status": status,
            "reason": None,
            "failure_reason": None,
            "created": int(created.timestamp()),
        },
    )


E = EventType
LATER = T0 + timedelta(days=1)
EUR_STRIPE = {"currency": "eur", "gateway": "stripe"}
MANUAL = {"capture": "manual"}
RPM = "requires_payment_method"
DECLINED, INSUFFICIENT = (
    ("card_declined", "generic_decline"),
    ("card_declined", "insufficient_funds"),
)

# A small known dataset (merchant acct_a, test mode unless said otherwise):
#   day 1  pi_1 usd 1000 automatic, approved at once                       succeeded
#          pi_2 usd 2000 manual: approved, captured 1500                   succeeded
#          pi_3 usd  500 automatic: declined (generic), then approved      succeeded
#          pi_4 eur  700 stripe: declined (insufficient_funds), canceled   canceled
#          pi_5 eur  300 never confirmed                                   requires_payment_method
#   day 2  pi_6 usd  900 automatic, approved                               succeeded
#   refunds (made on day 2): pi_1 400 succeeded, pi_2 1500 succeeded, pi_6 300 succeeded,
#          pi_3 100 failed, pi_6 200 still pending
#   elsewhere: acct_b's pi_7 (usd 5000, succeeded) and acct_a's live-mode pi_8 (usd 100)
# fmt: off
DATASET = [
    pi_event(1, E.PAYMENT_INTENT_CREATED, "pi_1", status="processing"),
    pi_event(2, E.PAYMENT_INTENT_SUCCEEDED, "pi_1", status="succeeded", received=1000),
    pi_event(3, E.PAYMENT_INTENT_CREATED, "pi_2", status="processing", amount=2000, **MANUAL),
    pi_event(4, E.PAYMENT_INTENT_AMOUNT_CAPTURABLE_UPDATED, "pi_2", status="requires_capture",
             amount=2000, **MANUAL),
    pi_event(5, E.PAYMENT_INTENT_SUCCEEDED, "pi_2", status="succeeded", amount=2000,
             received=1500, **MANUAL),
    pi_event(6, E.PAYMENT_INTENT_CREATED, "pi_3", status="processing", amount=500),
    pi_event(7, E.PAYMENT_INTENT_PAYMENT_FAILED, "pi_3", status=RPM, amount=500, error=DECLINED),
    pi_event(8, E.PAYMENT_INTENT_SUCCEEDED, "pi_3", status="succeeded", amount=500, received=500),
    pi_event(9, E.PAYMENT_INTENT_CREATED, "pi_4", status="processing", amount=700, **EUR_STRIPE),
    pi_event(10, E.PAYMENT_INTENT_PAYMENT_FAILED, "pi_4", status=RPM, amount=700,
             error=INSUFFICIENT, **EUR_STRIPE),
    pi_event(11, E.PAYMENT_INTENT_CANCELED, "pi_4", status="canceled", amount=700, **EUR_STRIPE),
    pi_event(12, E.PAYMENT_INTENT_CREATED, "pi_5", status=RPM, amount=300, currency="eur"),
    pi_event(13, E.PAYMENT_INTENT_CREATED, "pi_6", status="processing", amount=900, created=LATER),
    pi_event(14, E.PAYMENT_INTENT_SUCCEEDED, "pi_6", status="succeeded", amount=900, received=900,
             created=LATER),
    refund_event(15, E.REFUND_CREATED, "re_1", "pi_1", status="pending", amount=400),
    refund_event(16, E.REFUND_UPDATED, "re_1", "pi_1", status="succeeded", amount=400),
    refund_event(17, E.REFUND_CREATED, "re_2", "pi_2", status="pending", amount=1500),
    refund_event(18, E.REFUND_UPDATED, "re_2", "pi_2", status="succeeded", amount=1500),
    refund_event(19, E.REFUND_CREATED, "re_3", "pi_6", status="pending", amount=300),
    refund_event(20, E.REFUND_UPDATED, "re_3", "pi_6", status="succeeded", amount=300),
    refund_event(21, E.REFUND_CREATED, "re_4", "pi_3", status="pending", amount=100),
    refund_event(22, E.REFUND_FAILED, "re_4", "pi_3", status="failed", amount=100),
    refund_event(23, E.REFUND_CREATED, "re_5", "pi_6", status="pending", amount=200),
    pi_event(24, E.PAYMENT_INTENT_SUCCEEDED, "pi_7", status="succeeded", amount=5000,
             received=5000, merchant="acct_b"),
    pi_event(25, E.PAYMENT_INTENT_SUCCEEDED, "pi_8", status="succeeded", amount=100, received=100,
             livemode=True),
]


def _rows(name: ReportName, *values: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS[name], row, strict=True)) for row in values]


EXPECTED: dict[ReportName, list[dict[str, Any]]] = {
    ReportName.VOLUME: _rows(
        ReportName.VOLUME,
        ("2026-01-01", "eur", "sandbox", RPM, 1, 300),
        ("2026-01-01", "eur", "stripe", "canceled", 1, 700),
        ("2026-01-01", "usd", "sandbox", "succeeded", 3, 3500),
        ("2026-01-02", "usd", "sandbox", "succeeded", 1, 900),
    ),
    ReportName.AUTHORIZATION_RATE: _rows(
        ReportName.AUTHORIZATION_RATE,
        ("2026-01-01", "eur", "stripe", 1, 0, 1, 0.0),
        ("2026-01-01", "usd", "sandbox", 4, 3, 1, 0.75),
        ("2026-01-02", "usd", "sandbox", 1, 1, 0, 1.0),
    ),
    ReportName.DECLINE_REASONS: _rows(
        ReportName.DECLINE_REASONS,
        ("card_declined", "generic_decline", 1),
        ("card_declined", "insufficient_funds", 1),
    ),
    ReportName.REFUND_RATE: _rows(
        ReportName.REFUND_RATE,
        ("2026-01-01", "usd", 3000, 1900, 2, 0.6333),  # pi_1, pi_2, pi_3 captured; 400 + 1500
        ("2026-01-02", "usd", 900, 300, 1, 0.3333),
    ),
}
# fmt: on
ACCT_A = ReportQuery(livemode=False, merchant_id="acct_a")


async def reports(store: ReportingStore, query: ReportQuery = ACCT_A) -> dict[ReportName, Any]:
    return {name: shape(name, await store.query(name, query)) for name in ReportName}


def _reporting(store: ReportingStore) -> Reporting:
    return Reporting(store, engines=None, clock=FakeClock())  # type: ignore[arg-type]


async def test_each_report_gives_exact_figures_on_a_known_dataset(store: ReportingStore) -> None:
    await _reporting(store).apply(DATASET)
    assert await reports(store) == EXPECTED

    day2 = await reports(store, ReportQuery(livemode=False, merchant_id="acct_a", start=DAY2))
    assert day2[ReportName.VOLUME] == EXPECTED[ReportName.VOLUME][-1:]
    assert day2[ReportName.REFUND_RATE] == EXPECTED[ReportName.REFUND_RATE][-1:]
    assert day2[ReportName.DECLINE_REASONS] == []
    day1 = await reports(store, ReportQuery(livemode=False, merchant_id="acct_a", end=DAY1))
    assert day1[ReportName.AUTHORIZATION_RATE] == EXPECTED[ReportName.AUTHORIZATION_RATE][:2]

    # Merchants and modes are worlds apart; without a merchant, every merchant's test mode.
    other = await store.query(ReportName.VOLUME, ReportQuery(livemode=False, merchant_id="acct_b"))
    assert [(r["count"], r["amount"]) for r in other] == [(1, 5000)]
    live = await store.query(ReportName.VOLUME, ReportQuery(livemode=True, merchant_id="acct_a"))
    assert [(r["count"], r["amount"]) for r in live] == [(1, 100)]
    everyone = shape(ReportName.VOLUME, await store.query(ReportName.VOLUME, ReportQuery(False)))
    assert sum(r["count"] for r in everyone) == 7


async def test_events_out_of_order_keep_the_newest_state(store: ReportingStore) -> None:
    """Delivered newest first, one by one: older states arriving later change nothing."""
    projector = _reporting(store)
    for event in reversed(DATASET):
        await projector.apply([event])
    assert await reports(store) == EXPECTED


async def test_duplicates_never_count_twice(store: ReportingStore) -> None:
    projector = _reporting(store)
    await projector.apply(DATASET)
    await projector.apply(DATASET)  # the whole stream again, as at-least-once allows
    await projector.apply(DATASET[::3] + DATASET[::3])  # and duplicates inside one batch
    for event in DATASET[5:9]:
        await projector.apply([event])
    assert await reports(store) == EXPECTED


async def test_clickhouse_counts_once_before_parts_merge(clickhouse_url: str) -> None:
    """Re-inserted rows really are in the table twice until a merge; FINAL reads them once."""
    store = ClickHouseStore.from_url(clickhouse_url)
    try:
        projector = _reporting(store)
        await projector.apply(DATASET)
        await projector.apply(DATASET)
        admin = _clickhouse_admin()
        raw = admin.execute(f"SELECT count() FROM {store.database}.payments")[0][0]  # noqa: S608
        admin.disconnect()
        assert raw == 2 * 8  # 8 payment intents, each inserted by both batches
        assert await reports(store) == EXPECTED
    finally:
        await store.close()


async def test_lag_is_the_newest_applied_event(store: ReportingStore) -> None:
    assert (await store.lag()).seq == 0
    clock = FakeClock(T0 + timedelta(minutes=5))
    projector = Reporting(store, engines=None, clock=clock)  # type: ignore[arg-type]
    await projector.apply(DATASET[:10])
    await projector.apply(DATASET[3:5])  # older events later: the watermark stays
    lag = await store.lag()
    assert lag.seq == 10
    assert lag.event_created_at == DATASET[9].created_at
    assert lag.applied_at == clock.now()


def _attempt(pi: str, key: str, seq: int, *, approved: bool = True) -> AuthorizationRow:
    return AuthorizationRow(
        payment_intent_id=pi,
        key=key,
        merchant_id="acct_a",
        livemode=False,
        at=T0,
        currency="usd",
        gateway="sandbox",
        approved=approved,
        code=None if approved else "card_declined",
        decline_code=None if approved else "generic_decline",
        seq=seq,
    )


async def test_a_rebuild_replaces_projected_attempts_up_to_its_watermark(
    store: ReportingStore,
) -> None:
    projector = _reporting(store)
    await projector.apply(DATASET[5:8])  # pi_3: declined (seq 7), then approved (seq 8)

    async def attempts() -> tuple[int, int]:
        rows = await store.query(ReportName.AUTHORIZATION_RATE, ACCT_A)
        return sum(r["attempts"] for r in rows), sum(r["approved"] for r in rows)

    assert await attempts() == (2, 1)
    # What a backfill would read for pi_3: its row, and its two attempts keyed by the write
    # store's own ids, all at the watermark.
    row = project([DATASET[7]]).payments[0]
    rebuilt_rows = [
        _attempt("pi_3", "gop_decline", 9, approved=False),
        _attempt("pi_3", "ltx_hold", 9),
    ]
    batch = Rebuilt(
        through=9,
        payment_intent_ids=["pi_3"],
        payments=[replace(row, version=9)],
        refunds=[],
        authorizations=rebuilt_rows,
    )
    await store.rebuild(batch)
    await store.rebuild(batch)  # idempotent
    assert await attempts() == (2, 1)  # the rebuilt pair replaced the projected pair

    await projector.apply(DATASET[6:8])  # replays at or below the watermark: already in
    assert await attempts() == (2, 1)
    late = pi_event(
        30,
        E.PAYMENT_INTENT_PAYMENT_FAILED,
        "pi_3",
        status="requires_payment_method",
        amount=500,
        error=("card_declined", "do_not_honor"),
    )
    await projector.apply([late])  # above it: counted
    assert await attempts() == (3, 1)
    reasons = shape(
        ReportName.DECLINE_REASONS, await store.query(ReportName.DECLINE_REASONS, ACCT_A)
    )
    assert {(r["decline_code"], r["count"]) for r in reasons} == {
        ("generic_decline", 1),
        ("do_not_honor", 1),
    }
    # A later rebuild that saw the late decline takes it over, without counting it twice.
    await store.rebuild(
        Rebuilt(
            through=31,
            payment_intent_ids=["pi_3"],
            payments=[replace(row, version=31)],
            refunds=[],
            authorizations=[
                *(
                    _attempt(a.payment_intent_id, a.key, 31, approved=a.approved)
                    for a in rebuilt_rows
                ),
                _attempt("pi_3", "gop_late", 31, approved=False),
            ],
        )
    )
    assert await attempts() == (3, 1)
    # The newest state: the rebuilt row (version 31) over the projected one (version 30).
    volume = await store.query(ReportName.VOLUME, ACCT_A)
    assert [(r["status"], r["count"]) for r in volume] == [("succeeded", 1)]


# --- through the payment flow: live projection, write store, backfill -----------------------------


async def _make_payments(container: Container, clock: FakeClock) -> tuple[c.Caller, c.Caller]:
    """The known dataset again, this time made through the payment service (day 1 is the
    clock's start, 2026-01-01)."""
    merchant = await container.merchants.create_merchant("Reports Ltd")
    a = c.Caller(merchant_id=merchant.id, livemode=False)
    b_merchant = await container.merchants.create_merchant("Elsewhere Ltd")
    b = c.Caller(merchant_id=b_merchant.id, livemode=False)
    pay = container.payments

    async def intent(
        caller: c.Caller,
        amount: int,
        currency: str,
        token: str | None,
        capture: CaptureMethod = CaptureMethod.AUTOMATIC,
    ) -> str:
        try:
            made = await pay.create_payment_intent(
                caller,
                c.CreatePaymentIntent(
                    amount=amount,
                    currency=currency,
                    payment_method=token,
                    capture_method=capture,
                    confirm=token is not None,
                ),
                None,
            )
        except CardError as exc:
            declined = exc.payment_intent_id
            assert declined is not None
            return declined
        assert isinstance(made, PaymentIntent)
        return made.id

    pi_1 = await intent(a, 1000, "usd", "tok_visa")
    pi_2 = await intent(a, 2000, "usd", "tok_visa", CaptureMethod.MANUAL)
    await pay.capture(a, c.CapturePaymentIntent(pi_2, 1500), None)
    pi_3 = await intent(a, 500, "usd", "tok_chargeDeclined")
    await pay.confirm(a, c.ConfirmPaymentIntent(pi_3, "tok_visa"), None)
    pi_4 = await intent(a, 700, "eur", "tok_chargeDeclinedInsufficientFunds")
    await pay.cancel(a, c.CancelPaymentIntent(pi_4), None)
    await intent(a, 300, "eur", None)
    await intent(b, 5000, "usd", "tok_visa")
    await intent(c.Caller(merchant_id=merchant.id, livemode=True), 100, "usd", "tok_visa")
    clock.advance(days=1)
    pi_6 = await intent(a, 900, "usd", "tok_visa")
    for pi, amount in ((pi_1, 400), (pi_2, 1500), (pi_6, 300)):
        refund = await pay.create_refund(a, c.CreateRefund(pi, amount), None)
        assert isinstance(refund, Refund)
    return a, b


def _expected_for(merchant_id: str) -> dict[ReportName, list[dict[str, Any]]]:
    """EXPECTED, but everything went through the sandbox gateway (pi_4 too)."""
    expected = json.loads(json.dumps(EXPECTED))
    for row in expected[ReportName.VOLUME] + expected[ReportName.AUTHORIZATION_RATE]:
        row["gateway"] = "sandbox"
    expected[ReportName.VOLUME] = sorted(
        expected[ReportName.VOLUME],
        key=lambda r: (r["day"], r["currency"], r["gateway"], r["status"]),
    )
    return {ReportName(k): v for k, v in expected.items()}


async def _relay_all(container: Container) -> None:
    while await container.relay.run_once():
        pass


async def _write_store(container: Container, query: ReportQuery) -> dict[ReportName, Any]:
    async with container.engines.read.connect() as conn:
        return {
            name: shape(name, await write_store_report(conn, name, query)) for name in ReportName
        }


async def test_payments_flow_through_the_relay_into_reports_equal_to_the_write_store(
    container: Container, clock: FakeClock
) -> None:
    a, b = await _make_payments(container, clock)
    await _relay_all(container)  # the memory bus hands every event to the projector
    query = ReportQuery(livemode=False, merchant_id=a.merchant_id)
    projected = {name: (await container.reporting.report(name, query)).rows for name in ReportName}
    assert projected == _expected_for(a.merchant_id)
    if container.engines.read.dialect.name == "postgresql":
        assert await _write_store(container, query) == projected
        for other in (
            ReportQuery(livemode=False, merchant_id=b.merchant_id),
            ReportQuery(livemode=True, merchant_id=a.merchant_id),
            ReportQuery(livemode=False, start=DAY2, end=DAY2),
        ):
            assert await _write_store(container, other) == {
                name: (await container.reporting.report(name, other)).rows for name in ReportName
            }
    lag = await container.reporting.lag()
    async with container.engines.read.connect() as conn:
        newest = (
            await conn.execute(select(t.outbox.c.seq).order_by(t.outbox.c.seq.desc()))
        ).first()
    assert newest is not None
    assert lag.seq == newest.seq


async def _all_events(container: Container) -> list[Event]:
    async with container.uow.reading() as repo:
        rows = (await repo.conn.execute(select(t.outbox).order_by(t.outbox.c.seq))).all()
    return [
        Event(
            seq=r.seq,
            id=r.id,
            type=r.type,
            merchant_id=r.merchant_id,
            livemode=r.livemode,
            aggregate_type=r.aggregate_type,
            aggregate_id=r.aggregate_id,
            created_at=r.created_at,
            data=r.data,
        )
        for r in rows
    ]


async def test_backfill_rebuilds_what_live_projection_built(
    container: Container, clock: FakeClock, reporting_url: str, tmp_path: Path
) -> None:
    a, _ = await _make_payments(container, clock)
    await _relay_all(container)
    query = ReportQuery(livemode=False, merchant_id=a.merchant_id)
    live = {name: (await container.reporting.report(name, query)).rows for name in ReportName}

    # A second, empty store of the same kind, rebuilt from the write store alone.
    fresh = _fresh_store(reporting_url, tmp_path)
    rebuilt = Reporting(fresh, container.engines, clock)
    try:
        seen: list[tuple[int, int]] = []
        summary = await rebuilt.backfill(
            lambda done, total: seen.append((done, total)), batch_size=3
        )
        assert summary.payment_intents == 8
        assert summary.refunds == 3
        assert summary.authorization_attempts == 8  # 6 approvals, 2 declines
        assert seen[0] == (0, 8)
        assert seen[-1] == (8, 8)
        assert {n: (await rebuilt.report(n, query)).rows for n in ReportName} == live
        await rebuilt.backfill()  # again: nothing changes
        assert {n: (await rebuilt.report(n, query)).rows for n in ReportName} == live

        # Events keep arriving: every event so far, delivered late (all at or below the
        # watermark), then new payments' events. Nothing is lost or counted twice.
        await rebuilt.apply(await _all_events(container))
        assert {n: (await rebuilt.report(n, query)).rows for n in ReportName} == live
        before = (await container.reporting.lag()).seq
        clock.advance(hours=1)
        declined = c.CreatePaymentIntent(
            amount=250, currency="usd", payment_method="tok_chargeDeclined", confirm=True
        )
        with pytest.raises(CardError):
            await container.payments.create_payment_intent(a, declined, None)
        refund = await container.payments.create_refund(
            a, c.CreateRefund(await _intent_with(container, a, 1000)), None
        )
        assert isinstance(refund, Refund)
        await _relay_all(container)
        newer = [e for e in await _all_events(container) if e.seq > before]
        assert newer
        await rebuilt.apply(newer)
        live = {name: (await container.reporting.report(name, query)).rows for name in ReportName}
        assert {n: (await rebuilt.report(n, query)).rows for n in ReportName} == live
        await rebuilt.backfill()  # and a backfill after those: still the same
        assert {n: (await rebuilt.report(n, query)).rows for n in ReportName} == live
        if container.engines.read.dialect.name == "postgresql":
            assert await _write_store(container, query) == live
    finally:
        await _drop(fresh)


async def test_backfill_while_payments_and_events_keep_coming(
    container: Container, clock: FakeClock, reporting_url: str, tmp_path: Path
) -> None:
    """The backfill runs side by side with payments being made and their events projected
    into the same store (interleaved at every database round trip; on PostgreSQL its batch
    locks make payments on those intents wait). Afterwards the store equals the one that saw
    every event, and the write store."""
    a, _ = await _make_payments(container, clock)
    await _relay_all(container)
    fresh = _fresh_store(reporting_url, tmp_path)
    rebuilt = Reporting(fresh, container.engines, clock)
    container.bus.subscribe("reporting-rebuilt", rebuilt.apply)
    pay = container.payments
    try:

        async def traffic() -> None:
            for n in range(12):
                made = await pay.create_payment_intent(
                    a,
                    c.CreatePaymentIntent(
                        amount=1000 + n,
                        currency="usd",
                        payment_method="tok_chargeDeclined" if n % 4 == 0 else "tok_visa",
                        capture_method=CaptureMethod.MANUAL,
                    ),
                    None,
                )
                assert isinstance(made, PaymentIntent)
                try:
                    await pay.confirm(a, c.ConfirmPaymentIntent(made.id), None)
                except CardError:
                    continue
                await pay.capture(a, c.CapturePaymentIntent(made.id, 900), None)
                await container.relay.run_once()
                await pay.create_refund(a, c.CreateRefund(made.id, 100 + n), None)
                await container.relay.run_once()

        await asyncio.gather(traffic(), rebuilt.backfill(batch_size=2))
        await _relay_all(container)
        query = ReportQuery(livemode=False, merchant_id=a.merchant_id)
        live = {name: (await container.reporting.report(name, query)).rows for name in ReportName}
        assert sum(r["count"] for r in live[ReportName.VOLUME]) == 6 + 12
        assert {n: (await rebuilt.report(n, query)).rows for n in ReportName} == live
        if container.engines.read.dialect.name == "postgresql":
            assert await _write_store(container, query) == live
    finally:
        del container.bus.handlers["reporting-rebuilt"]
        await _drop(fresh)


async def test_backfill_waits_for_a_payment_committing_out_of_seq_order(
    container: Container, clock: FakeClock, reporting_url: str, tmp_path: Path
) -> None:
    """PostgreSQL commits in any order: a transaction can hold seq s for an intent and commit
    after one holding s + 1. A backfill reading the intent before that commit, with s + 1 as
    its watermark, would keep the old state and then ignore the event at s for good. Locking
    its batch makes the backfill wait for the commit and read the new state instead."""
    if container.engines.read.dialect.name != "postgresql":
        pytest.skip("SQLite's writers take their seq and commit one at a time")
    a, _ = await _make_payments(container, clock)
    authorized = await container.payments.create_payment_intent(
        a,
        c.CreatePaymentIntent(
            amount=3131,
            currency="usd",
            payment_method="tok_visa",
            capture_method=CaptureMethod.MANUAL,
            confirm=True,
        ),
        None,
    )
    assert isinstance(authorized, PaymentIntent)
    held = authorized.id  # canceled below, by a transaction that commits late
    await _relay_all(container)
    async with container.uow.reading() as repo:
        last = (
            await repo.conn.execute(
                select(t.outbox)
                .where(t.outbox.c.aggregate_id == held)
                .order_by(t.outbox.c.seq.desc())
            )
        ).first()
    assert last is not None
    fresh = _fresh_store(reporting_url, tmp_path)
    rebuilt = Reporting(fresh, container.engines, clock)
    writer = await container.engines.write.connect()
    try:
        # The slow transaction: locks the intent, changes it, takes its seq, does not commit.
        await writer.begin()
        await writer.execute(
            select(t.payment_intents.c.id).where(t.payment_intents.c.id == held).with_for_update()
        )
        await writer.execute(
            t.payment_intents.update()
            .where(t.payment_intents.c.id == held)
            .values(status="canceled", amount_capturable=0)
        )
        data = {**last.data, "status": "canceled", "amount_capturable": 0}
        row = {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "type": str(E.PAYMENT_INTENT_CANCELED),
            "merchant_id": last.merchant_id,
            "livemode": last.livemode,
            "aggregate_type": "payment_intent",
            "aggregate_id": held,
            "created_at": clock.now(),
            "data": data,
        }
        seq = (
            await writer.execute(t.outbox.insert().values(**row).returning(t.outbox.c.seq))
        ).scalar_one()
        # Meanwhile another payment commits, with a higher seq.
        await container.payments.create_payment_intent(
            a,
            c.CreatePaymentIntent(
                amount=4242, currency="usd", payment_method="tok_visa", confirm=True
            ),
            None,
        )
        backfill = asyncio.create_task(rebuilt.backfill())
        async with container.engines.read.connect() as watcher:
            for _ in range(1000):  # until the backfill waits on the intent's lock
                waiting = (
                    await watcher.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                ).scalar_one()
                await watcher.rollback()  # the statistics are a snapshot per transaction
                if waiting or backfill.done():
                    break
                await asyncio.sleep(0.01)
        await writer.commit()
        await backfill
        late = Event(
            seq,
            row["id"],
            row["type"],
            row["merchant_id"],
            row["livemode"],
            "payment_intent",
            held,
            row["created_at"],
            data,
        )
        await rebuilt.apply([late])  # the slow transaction's event, delivered after
        volume = await fresh.query(
            ReportName.VOLUME, ReportQuery(livemode=False, merchant_id=a.merchant_id)
        )
        assert {(r["status"], r["amount"]) for r in volume if r["day"] == DAY2} == {
            ("succeeded", 900 + 4242),
            ("canceled", 3131),
        }
    finally:
        await writer.close()
        await _drop(fresh)


def _fresh_store(reporting_url: str, tmp_path: Path) -> ReportingStore:
    """A second, empty store of the same kind."""
    if reporting_url.startswith("duckdb://"):
        return _store(f"duckdb:///{tmp_path / 'rebuilt.duckdb'}")
    return ClickHouseStore.from_url(reporting_url + "_rebuilt")


async def _drop(store: ReportingStore) -> None:
    await store.close()
    if isinstance(store, ClickHouseStore):
        admin = _clickhouse_admin()
        admin.execute(f"DROP DATABASE IF EXISTS {store.database}")
        admin.disconnect()


async def _intent_with(container: Container, caller: c.Caller, amount: int) -> str:
    async with container.uow.reading() as repo:
        row = (
            await repo.conn.execute(
                select(t.payment_intents.c.id).where(
                    t.payment_intents.c.merchant_id == caller.merchant_id,
                    t.payment_intents.c.amount == amount,
                    t.payment_intents.c.livemode.is_(False),
                )
            )
        ).first()
    assert row is not None
    return str(row.id)


# --- the API and the command line -----------------------------------------------------------------


async def test_reports_route(container: Container, client: httpx.AsyncClient) -> None:
    for token in ("tok_visa", "tok_visa", "tok_chargeDeclined"):
        await client.post(
            "/v1/payment_intents",
            json={"amount": 1200, "currency": "usd", "payment_method": token, "confirm": True},
        )
    await _relay_all(container)

    volume = await client.get("/v1/reports/volume")
    assert volume.status_code == 200
    assert volume.json() == {
        "object": "report",
        "name": "volume",
        "computed_at": int(container.clock.now().timestamp()),
        "rows": [
            {
                "day": "2026-01-01",
                "currency": "usd",
                "gateway": "sandbox",
                "status": "requires_payment_method",
                "count": 1,
                "amount": 1200,
            },
            {
                "day": "2026-01-01",
                "currency": "usd",
                "gateway": "sandbox",
                "status": "succeeded",
                "count": 2,
                "amount": 2400,
            },
        ],
    }
    rate = await client.get("/v1/reports/authorization_rate", params={"from": "2026-01-01"})
    assert [(r["attempts"], r["approved"], r["rate"]) for r in rate.json()["rows"]] == [
        (3, 2, 0.6667)
    ]
    none = await client.get("/v1/reports/authorization_rate", params={"to": "2025-12-31"})
    assert none.json()["rows"] == []

    missing = await client.get("/v1/reports/disputes")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"
    bad = await client.get("/v1/reports/volume", params={"from": "2026-13-01"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "from"
    backwards = await client.get(
        "/v1/reports/volume", params={"from": "2026-02-01", "to": "2026-01-01"}
    )
    assert backwards.status_code == 400
    assert backwards.json()["error"]["type"] == "invalid_request_error"
    assert (
        await client.get("/v1/reports/volume", headers={"Authorization": ""})
    ).status_code == 401


async def test_the_route_serves_a_report_again_for_the_cache_period(
    container: Container, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """STRONGROOM_REPORT_CACHE_SECONDS (5 by default): a dashboard polling the same report gets
    the computed result, with its `computed_at`, until it is 5 s old on the container's clock."""
    pay = {"amount": 700, "currency": "usd", "payment_method": "tok_visa", "confirm": True}
    await client.post("/v1/payment_intents", json=pay)
    await _relay_all(container)
    first = (await client.get("/v1/reports/volume")).json()
    assert [r["count"] for r in first["rows"]] == [1]

    await client.post("/v1/payment_intents", json=pay)
    await _relay_all(container)
    clock.advance(seconds=4.9)
    assert (await client.get("/v1/reports/volume")).json() == first
    clock.advance(seconds=0.1)
    fresh = (await client.get("/v1/reports/volume")).json()
    assert [r["count"] for r in fresh["rows"]] == [2]
    assert fresh["computed_at"] == int(clock.now().timestamp())


async def test_a_key_sees_only_its_merchant_and_mode(
    container: Container, client: httpx.AsyncClient
) -> None:
    other = await container.merchants.create_merchant("Other")
    live = await container.merchants.create_key(other.id, KeyKind.SECRET, livemode=True)
    await client.post(
        "/v1/payment_intents",
        json={"amount": 999, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
    )
    await _relay_all(container)
    theirs = await client.get(
        "/v1/reports/volume", headers={"Authorization": f"Bearer {live.secret}"}
    )
    assert theirs.json()["rows"] == []
    ours = await client.get("/v1/reports/volume")
    assert [r["amount"] for r in ours.json()["rows"]] == [999]


# PostgreSQL only: the command's parsing and output do not depend on the store, the service
# layer under it runs on both stores in the tests above, and each run starts several processes.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_report_command(
    database_url: str, container: Container, clock: FakeClock, reporting_url: str
) -> None:
    a, _ = await _make_payments(container, clock)
    await _relay_all(container)
    await container.reporting.close()  # let the command open the DuckDB file at once
    env = {"STRONGROOM_REPORTING_URL": reporting_url}
    expected = _expected_for(a.merchant_id)

    result = cli(
        database_url, "report", "refund_rate", "--merchant", a.merchant_id, "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert isinstance(printed.pop("computed_at"), int)  # the command's own (system) clock
    assert printed == {
        "object": "report",
        "name": "refund_rate",
        "rows": expected[ReportName.REFUND_RATE],
    }
    result = cli(
        database_url, "report", "volume", "--merchant", a.merchant_id, "--csv",
        "--from", "2026-01-02", "--to", "2026-01-02", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(csv.DictReader(io.StringIO(result.stdout))) == [
        {
            "day": "2026-01-02",
            "currency": "usd",
            "gateway": "sandbox",
            "status": "succeeded",
            "count": "1",
            "amount": "900",
        }
    ]
    table = cli(database_url, "report", "decline_reasons", "--merchant", a.merchant_id, env=env)
    assert table.returncode == 0, table.stderr
    assert "insufficient_funds" in table.stdout
    assert "generic_decline" in table.stdout
    live = cli(
        database_url,
        "report",
        "volume",
        "--merchant",
        a.merchant_id,
        "--livemode",
        "--json",
        env=env,
    )
    assert [r["amount"] for r in json.loads(live.stdout)["rows"]] == [100]

    bad = cli(database_url, "report", "volume", "--from", "yesterday", env=env)
    assert bad.returncode != 0
    assert "from" in bad.stderr

    backfilled = cli(database_url, "report", "backfill", "--json", env=env)
    assert backfilled.returncode == 0, backfilled.stderr
    assert json.loads(backfilled.stdout)["payment_intents"] == 8
    again = cli(
        database_url, "report", "refund_rate", "--merchant", a.merchant_id, "--json", env=env
    )
    assert json.loads(again.stdout)["rows"] == expected[ReportName.REFUND_RATE]
