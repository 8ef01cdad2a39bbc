"""The standard reports on the reporting stores against the same reports in SQL on the write
store, over 1,000,000 payments.

    python bench/reports.py   (PostgreSQL; ClickHouse too unless BENCH_REPORTS_STORES=duckdb)

1. A throwaway PostgreSQL database, migrated, filled by COPY with BENCH_REPORTS_PAYMENTS
   synthetic payment intents over a year, four merchants (70/15/10/5 %), 90 % live mode, with
   what the payment service writes around them: authorize, capture, void and refund
   operations, ledger transactions (holds, captures, releases, refunds; not their entries,
   which no report reads), refunds, and one audit event per authorization attempt.
   Proportions: 5 % never confirmed; of the rest 88 % approved at once, 7 % approved after a
   decline, 5 % declined for good; a quarter capture manually (90 % captured, a fifth of
   those partially); 6 % of succeeded payments refunded once (3 % of refunds fail, 2 % pend).
2. The same payments, as the projector would have left them, bulk-loaded into a DuckDB file
   and a ClickHouse database (merged with OPTIMIZE … FINAL, as background merges would).
3. Each report for the largest merchant's live mode over the whole year: one warm-up run, then
   BENCH_REPORTS_REPS (5) timed runs per store, the median. Every store's rows must equal the
   write store's. Prints the times and the speed-up of each store over the write store,
   against the target (≥ 10x), and one BENCH_REPORTS JSON line.

Everything created is dropped at the end. BENCH_STRICT=1 exits 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from strongroom.adapters.db.migrate import upgrade
from strongroom.adapters.reporting.clickhouse import ClickHouseStore
from strongroom.adapters.reporting.duckdb import DuckDBStore
from strongroom.adapters.reporting.port import (
    AuthorizationRow,
    Changes,
    PaymentRow,
    RefundRow,
    ReportingStore,
    ReportName,
    ReportQuery,
)
from strongroom.adapters.reporting.write_store import write_store_report
from strongroom.service_layer.reporting import shape

TARGET = 10.0
PG = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432")
CLICKHOUSE = os.environ.get("BENCH_CLICKHOUSE", "127.0.0.1:9000")
PAYMENTS = int(os.environ.get("BENCH_REPORTS_PAYMENTS", "1000000"))
REPS = int(os.environ.get("BENCH_REPORTS_REPS", "5"))
STORES = os.environ.get("BENCH_REPORTS_STORES", "duckdb,clickhouse").split(",")
CHUNK = 100_000
START = datetime(2025, 1, 1, tzinfo=UTC)
MERCHANTS = [
    ("acct_bench_big", 70),
    ("acct_bench_mid", 15),
    ("acct_bench_small", 10),
    ("acct_bench_tiny", 5),
]
CURRENCIES = [("usd", 60), ("eur", 25), ("gbp", 10), ("jpy", 5)]
GATEWAYS = [("sandbox", 50), ("stripe", 35), ("braintree", 15)]
DECLINES = [
    (("card_declined", "generic_decline"), 45),
    (("card_declined", "insufficient_funds"), 30),
    (("card_declined", "do_not_honor"), 8),
    (("expired_card", "expired_card"), 7),
    (("incorrect_cvc", "incorrect_cvc"), 5),
    (("card_declined", "fraudulent"), 3),
    (("processing_error", None), 2),
]
AUDIT_CREATE, AUDIT_CONFIRM = "api:payment_intent:create", "api:payment_intent:confirm"


def pick(rng: random.Random, weighted: list[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


@dataclass
class Chunk:
    """One chunk of payments: write-store records (for COPY) and reporting rows."""

    intents: list[tuple[Any, ...]] = field(default_factory=list)
    refunds: list[tuple[Any, ...]] = field(default_factory=list)
    operations: list[tuple[Any, ...]] = field(default_factory=list)
    ledger: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)
    payments: list[PaymentRow] = field(default_factory=list)
    refund_rows: list[RefundRow] = field(default_factory=list)
    attempts: list[AuthorizationRow] = field(default_factory=list)


INTENT_COLUMNS = (
    "id merchant_id amount currency status capture_method payment_method amount_capturable "
    "amount_received amount_refunded gateway gateway_reference last_payment_error metadata "
    "livemode created_at updated_at canceled_at cancellation_reason"
).split()
REFUND_COLUMNS = (
    "id merchant_id payment_intent_id amount currency status reason failure_reason "
    "gateway_reference metadata livemode created_at updated_at"
).split()
OPERATION_COLUMNS = (
    "id merchant_id payment_intent_id refund_id kind amount currency status request "
    "created_at updated_at"
).split()
LEDGER_COLUMNS = "id merchant_id movement payment_intent_id refund_id created_at".split()
AUDIT_COLUMNS = (
    "seq id merchant_id livemode occurred_at actor_type actor_id event_type outcome ip "
    "request_id resource_type resource_id details"
).split()


class Generator:
    """Deterministic synthetic payments; each chunk is written to every store."""

    def __init__(self, seed: int = 20260101) -> None:
        self.rng = random.Random(seed)
        self.seq = 0  # the outbox seq the projector would have seen
        self.audit_seq = 0
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.rng.getrandbits(64):016x}{self.counter:08x}"

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def chunk(self, size: int) -> Chunk:
        out = Chunk()
        for _ in range(size):
            self._payment(out)
        return out

    def _payment(self, out: Chunk) -> None:
        rng = self.rng
        merchant = pick(rng, MERCHANTS)
        livemode = rng.random() < 0.9
        currency = pick(rng, CURRENCIES)
        gateway = pick(rng, GATEWAYS)
        manual = rng.random() < 0.25
        amount = rng.randint(1, 2500) * (1 if currency == "jpy" else 100) + rng.randint(0, 99)
        created = START + timedelta(
            seconds=rng.randrange(365 * 86_400), microseconds=rng.randrange(10**6)
        )
        pi = self._id("pi")
        status, received, canceled_at, error = "requires_payment_method", 0, None, None
        reference: str | None = None
        now = created
        version = self._next_seq()  # payment_intent.created

        def attempt(approved: bool, at: datetime, codes: tuple[str, str | None] | None) -> None:
            op = self._id("gop")
            out.operations.append(
                (
                    op,
                    merchant,
                    pi,
                    None,
                    "authorize",
                    amount,
                    currency,
                    "succeeded" if approved else "failed",
                    json.dumps({"capture": not manual, "payment_method": "tok_bench"}),
                    at,
                    at,
                )
            )
            details: dict[str, Any] = {"amount": amount, "currency": currency, "operation": op}
            if codes:
                details |= {"code": codes[0]} | ({"decline_code": codes[1]} if codes[1] else {})
            self.audit_seq += 1
            out.audit.append(
                (
                    self.audit_seq,
                    self._id("aud"),
                    merchant,
                    livemode,
                    at,
                    "api_key",
                    "key_bench",
                    AUDIT_CONFIRM,
                    "success" if approved else "failure",
                    "203.0.113.7",
                    self._id("req"),
                    "payment_intent",
                    pi,
                    json.dumps(details),
                )
            )
            seq = self._next_seq()
            if approved:
                out.ledger.append((self._id("ltx"), merchant, "authorization_hold", pi, None, at))
            # The event: payment_failed, succeeded (automatic) or amount_capturable_updated.
            out.attempts.append(
                AuthorizationRow(
                    pi,
                    f"evt_{seq}",
                    merchant,
                    livemode,
                    at,
                    currency,
                    gateway,
                    approved,
                    codes[0] if codes else None,
                    codes[1] if codes else None,
                    seq,
                )
            )

        if rng.random() < 0.05:  # never confirmed; a third abandoned
            if rng.random() < 1 / 3:
                status, canceled_at = "canceled", created + timedelta(hours=rng.randint(1, 72))
                now = canceled_at
                version = self._next_seq()
        else:
            outcome = rng.random()
            now = created + timedelta(seconds=rng.uniform(0.3, 3))
            approved = True
            if outcome >= 0.88:  # a decline first
                codes = pick(rng, DECLINES)
                attempt(False, now, codes)
                error = codes
                version = self.seq
                if outcome < 0.95:  # the customer tries another card
                    now += timedelta(minutes=rng.randint(1, 600))
                else:
                    approved = False
            if approved:
                error = None
                attempt(True, now, None)
                version = self.seq
                reference = self._id("ch")
                if manual:
                    fate = rng.random()
                    later = now + timedelta(hours=rng.randint(1, 160))
                    if fate < 0.9:
                        received = (
                            amount if rng.random() < 0.8 else amount * rng.randint(50, 99) // 100
                        )
                        self._operation(out, merchant, pi, "capture", received, currency, later)
                        out.ledger.append((self._id("ltx"), merchant, "capture", pi, None, later))
                        if received < amount:
                            out.ledger.append(
                                (self._id("ltx"), merchant, "release", pi, None, later)
                            )
                        status, now, version = "succeeded", later, self._next_seq()
                    elif fate < 0.95:
                        self._operation(out, merchant, pi, "void", amount, currency, later)
                        out.ledger.append((self._id("ltx"), merchant, "release", pi, None, later))
                        status, canceled_at, now = "canceled", later, later
                        version = self._next_seq()
                    else:
                        status = "requires_capture"
                else:
                    status, received = "succeeded", amount
                    out.ledger.append((self._id("ltx"), merchant, "capture", pi, None, now))
            elif rng.random() < 0.4:  # declined for good, then abandoned
                status, canceled_at = "canceled", now + timedelta(hours=rng.randint(1, 48))
                now = canceled_at
                version = self._next_seq()
        refunded = 0
        if status == "succeeded" and rng.random() < 0.06:
            refunded = (
                received if rng.random() < 0.7 else max(1, received * rng.randint(10, 90) // 100)
            )
            self._refund(out, merchant, livemode, pi, refunded, currency, now)
        out.intents.append(
            (
                pi,
                merchant,
                amount,
                currency,
                status,
                "manual" if manual else "automatic",
                None if status == "requires_payment_method" else "tok_bench",
                amount if status == "requires_capture" else 0,
                received,
                refunded,
                gateway,
                reference,
                json.dumps({"type": "card_error", "code": error[0], "decline_code": error[1]})
                if error
                else None,
                json.dumps({"order_id": f"order-{self.counter}"}),
                livemode,
                created,
                now,
                canceled_at,
                "abandoned" if canceled_at else None,
            )
        )
        out.payments.append(
            PaymentRow(
                pi,
                merchant,
                livemode,
                created.replace(microsecond=0),
                currency,
                gateway,
                status,
                "manual" if manual else "automatic",
                amount,
                received,
                version,
            )
        )

    def _operation(
        self,
        out: Chunk,
        merchant: str,
        pi: str,
        kind: str,
        amount: int,
        currency: str,
        at: datetime,
        refund: str | None = None,
        status: str = "succeeded",
    ) -> None:
        out.operations.append(
            (
                self._id("gop"),
                merchant,
                pi,
                refund,
                kind,
                amount,
                currency,
                status,
                json.dumps({"reference": "ch_bench"}),
                at,
                at,
            )
        )

    def _refund(
        self,
        out: Chunk,
        merchant: str,
        livemode: bool,
        pi: str,
        amount: int,
        currency: str,
        after: datetime,
    ) -> None:
        rng = self.rng
        refund = self._id("re")
        at = after + timedelta(days=rng.randint(1, 30))
        fate = rng.random()
        status = "failed" if fate < 0.03 else "pending" if fate < 0.05 else "succeeded"
        self._operation(
            out,
            merchant,
            pi,
            "refund",
            amount,
            currency,
            at,
            refund,
            {"failed": "failed", "pending": "started"}.get(status, "succeeded"),
        )
        if status == "succeeded":
            out.ledger.append((self._id("ltx"), merchant, "refund", pi, refund, at))
        out.refunds.append(
            (
                refund,
                merchant,
                pi,
                amount,
                currency,
                status,
                None,
                "refund_exceeds_charge" if status == "failed" else None,
                None,
                "{}",
                livemode,
                at,
                at,
            )
        )
        self._next_seq()  # refund.created
        version = self.seq if status == "pending" else self._next_seq()
        out.refund_rows.append(
            RefundRow(
                refund,
                merchant,
                livemode,
                pi,
                at.replace(microsecond=0),
                currency,
                status,
                amount,
                version,
            )
        )


async def fill_write_store(conn: asyncpg.Connection, chunk: Chunk) -> None:
    await conn.copy_records_to_table(
        "payment_intents", records=chunk.intents, columns=INTENT_COLUMNS
    )
    await conn.copy_records_to_table("refunds", records=chunk.refunds, columns=REFUND_COLUMNS)
    await conn.copy_records_to_table(
        "gateway_operations", records=chunk.operations, columns=OPERATION_COLUMNS
    )
    await conn.copy_records_to_table(
        "ledger_transactions", records=chunk.ledger, columns=LEDGER_COLUMNS
    )
    await conn.copy_records_to_table("audit_events", records=chunk.audit, columns=AUDIT_COLUMNS)


async def timed(
    run: Callable[[], Awaitable[list[dict[str, Any]]]],
    before: Callable[[], Awaitable[None]] | None = None,
) -> tuple[float, list[Any]]:
    """The median of REPS runs after a warm-up; `before` (untimed) runs ahead of each."""
    await run()  # warm-up: caches, plans, connections
    times, rows = [], []
    for _ in range(REPS):
        if before is not None:
            await before()
        started = time.perf_counter()
        rows = await run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


async def clickhouse_admin(statement: str) -> None:
    from clickhouse_driver import Client

    host, _, port = CLICKHOUSE.partition(":")

    def run() -> None:
        client = Client(host, int(port or 9000), send_receive_timeout=600)
        try:
            client.execute(statement)
        finally:
            client.disconnect()

    await asyncio.to_thread(run)


def log(message: str) -> None:
    print(f"[reports {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def bench(pg_name: str, stores: dict[str, ReportingStore]) -> dict[str, Any]:
    pg_url = f"{PG.rstrip('/')}/{pg_name}"
    conn = await asyncpg.connect(pg_url)
    generator = Generator()
    started = time.perf_counter()
    try:
        await conn.execute(
            "INSERT INTO merchants (id, name, created_at) SELECT unnest($1::text[]), 'Bench', $2",
            [m for m, _ in MERCHANTS],
            START,
        )
        loaded = {"write store": 0.0, **dict.fromkeys(stores, 0.0)}
        for first in range(0, PAYMENTS, CHUNK):
            chunk = generator.chunk(min(CHUNK, PAYMENTS - first))
            clock = time.perf_counter()
            await fill_write_store(conn, chunk)
            loaded["write store"] += time.perf_counter() - clock
            for name, store in stores.items():
                clock = time.perf_counter()
                await store.apply(
                    Changes(chunk.payments, chunk.refund_rows, chunk.attempts, generator.seq)
                )
                loaded[name] += time.perf_counter() - clock
            log(f"loaded {first + len(chunk.intents):,} payments")
        clock = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        loaded["write store"] += time.perf_counter() - clock
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608 - ours
            for table in (
                "payment_intents",
                "gateway_operations",
                "ledger_transactions",
                "refunds",
                "audit_events",
            )
        }
    finally:
        await conn.close()
    if "clickhouse" in stores:
        clickhouse = stores["clickhouse"]
        assert isinstance(clickhouse, ClickHouseStore)
        clock = time.perf_counter()
        for table in ("payments", "refunds", "authorizations"):
            await clickhouse_admin(f"OPTIMIZE TABLE {clickhouse.database}.{table} FINAL")
        loaded["clickhouse"] += time.perf_counter() - clock
    log(f"generated and loaded in {time.perf_counter() - started:.0f} s: {counts}")
    for name, seconds in loaded.items():
        log(f"  {name} load: {seconds:.1f} s")

    query = ReportQuery(livemode=True, merchant_id=MERCHANTS[0][0])
    engine = create_async_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    results: dict[str, Any] = {}
    try:
        async with engine.connect() as pg:
            for name in ReportName:

                async def baseline(name: ReportName = name) -> list[dict[str, Any]]:
                    return await write_store_report(pg, name, query)

                seconds, rows = await timed(baseline)
                expected = shape(name, rows)
                entry: dict[str, Any] = {"write_store_ms": seconds * 1000, "rows": len(expected)}
                for store_name, store in stores.items():

                    async def run(
                        store: ReportingStore = store, name: ReportName = name
                    ) -> list[dict[str, Any]]:
                        return await store.query(name, query)

                    store_seconds, store_rows = await timed(run)
                    entry[f"{store_name}_ms"] = store_seconds * 1000
                    entry[f"{store_name}_speedup"] = seconds / store_seconds
                    entry[f"{store_name}_agrees"] = shape(name, store_rows) == expected
                    if isinstance(store, DuckDBStore):
                        # A lone request opens the file (and warms its cache) itself.
                        cold, _ = await timed(run, before=store.close)
                        entry["duckdb_cold_ms"] = cold * 1000
                results[str(name)] = entry
                log(f"timed {name}")
    finally:
        await engine.dispose()
    return {"payments": PAYMENTS, "counts": counts, "load_seconds": loaded, "reports": results}


def print_report(summary: dict[str, Any], stores: list[str]) -> bool:
    header = f"{'report':<20} {'write store (PG)':>17}"
    for name in stores:
        header += f" {name:>11} {'speed-up':>9} {'':<4}"
    print()
    print(
        f"Reports over {summary['payments']:,} payments (median of {REPS} runs; "
        f"largest merchant, live mode, whole year; target ≥ {TARGET:.0f}x)"
    )
    print(header)
    ok = True
    cold = []
    for report, entry in summary["reports"].items():
        line = f"{report:<20} {entry['write_store_ms']:>14.1f} ms"
        for name in stores:
            speedup = entry[f"{name}_speedup"]
            verdict = "PASS" if speedup >= TARGET else "MISS"
            if not entry[f"{name}_agrees"]:
                verdict = "DIFF"
            ok = ok and verdict == "PASS"
            line += f" {entry[f'{name}_ms']:>8.1f} ms {speedup:>8.1f}x {verdict:<4}"
        print(line)
        if "duckdb_cold_ms" in entry:
            ms = entry["duckdb_cold_ms"]
            cold.append(f"{report} {ms:.1f} ms ({entry['write_store_ms'] / ms:.1f}x)")
    if cold:
        print(
            "DuckDB with the file opened for each request (no warm connection): " + ", ".join(cold)
        )
    print("BENCH_REPORTS " + json.dumps(summary, default=str))
    return ok


async def main() -> int:
    pg_name = f"strongroom_bench_reports_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(f"{PG.rstrip('/')}/postgres")
    await admin.execute(f'CREATE DATABASE "{pg_name}"')
    stores: dict[str, ReportingStore] = {}
    clickhouse_db = f"strongroom_bench_reports_{uuid.uuid4().hex[:10]}"
    directory = tempfile.TemporaryDirectory(prefix="strongroom-bench-reports-")
    try:
        await asyncio.to_thread(
            upgrade,
            f"{PG.rstrip('/')}/{pg_name}".replace("postgresql://", "postgresql+asyncpg://", 1),
        )
        if "duckdb" in STORES:
            stores["duckdb"] = DuckDBStore(Path(directory.name) / "reporting.duckdb")
        if "clickhouse" in STORES:
            stores["clickhouse"] = ClickHouseStore.from_url(
                f"clickhouse://{CLICKHOUSE}/{clickhouse_db}"
            )
        for store in stores.values():
            await store.start()
        summary = await bench(pg_name, stores)
        passed = print_report(summary, list(stores))
    finally:
        for store in stores.values():
            await store.close()
        if "clickhouse" in stores:
            await clickhouse_admin(f"DROP DATABASE IF EXISTS {clickhouse_db}")
        directory.cleanup()
        await admin.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        await admin.close()
    return 0 if passed or os.environ.get("BENCH_STRICT") != "1" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
