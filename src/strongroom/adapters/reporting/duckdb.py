"""The embedded reporting store: one DuckDB file (`duckdb:///./var/reporting.duckdb`).

DuckDB lets one process at a time open a file for writing, or any number open it read-only
while none writes; yet `strongroom serve` reads reports while `strongroom worker` projects. So
no process keeps the file: a process holds a connection while it works (a burst of events, a
page of reports: the next call finds the connection and its cache warm) and lets go once idle
for IDLE_SECONDS, or after MAX_HOLD_SECONDS, then waits YIELD_SECONDS before taking the file
again so the other processes get a turn. A process opens the file read-only to read and
read-write to write; whoever finds it locked by another process retries until
LOCK_WAIT_SECONDS have passed (ReportingUnavailable then). Within a process, one connection at
a time (a lock per file): DuckDB refuses a read-only and a read-write connection to one file
side by side.

Newest-wins is an upsert guarded by version; an attempt is inserted once, by key, unless a
rebuild already covered its seq; a rebuild deletes the attempts it replaces in its own
transaction. So every stored row counts, and the queries are plain aggregates. Being the only
writer inside a transaction also lets the store keep the volume report itself up to date (a
payment leaves its old group as it joins its new one) and copy a payment's day and currency
onto its refunds, so neither report scans every payment row when asked.
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import duckdb

from strongroom.adapters.reporting.port import (
    AuthorizationRow,
    Changes,
    Lag,
    PaymentRow,
    Rebuilt,
    RefundRow,
    ReportingStore,
    ReportingUnavailable,
    ReportName,
    ReportQuery,
    Row,
)

T = TypeVar("T")
Connection = duckdb.DuckDBPyConnection

IDLE_SECONDS = 0.05
MAX_HOLD_SECONDS = 0.5
YIELD_SECONDS = 0.05
LOCK_WAIT_SECONDS = 15.0
VALUES_CHUNK = 500  # rows per INSERT … VALUES statement
CSV_THRESHOLD = 5000  # larger batches are staged through a CSV file, which DuckDB reads fast
CONSUMER = "reporting"

# Each table's columns in staging order, with their types.
PAYMENT_COLUMNS = (
    ("id", "VARCHAR"),
    ("merchant_id", "VARCHAR"),
    ("livemode", "BOOLEAN"),
    ("day", "DATE"),
    ("created_at", "TIMESTAMP"),
    ("currency", "VARCHAR"),
    ("gateway", "VARCHAR"),
    ("status", "VARCHAR"),
    ("capture_method", "VARCHAR"),
    ("amount", "BIGINT"),
    ("amount_received", "BIGINT"),
    ("version", "BIGINT"),
)
REFUND_COLUMNS = (
    ("id", "VARCHAR"),
    ("merchant_id", "VARCHAR"),
    ("livemode", "BOOLEAN"),
    ("payment_intent_id", "VARCHAR"),
    ("day", "DATE"),
    ("created_at", "TIMESTAMP"),
    ("currency", "VARCHAR"),
    ("status", "VARCHAR"),
    ("amount", "BIGINT"),
    ("version", "BIGINT"),
)
AUTHORIZATION_COLUMNS = (
    ("payment_intent_id", "VARCHAR"),
    ("key", "VARCHAR"),
    ("merchant_id", "VARCHAR"),
    ("livemode", "BOOLEAN"),
    ("day", "DATE"),
    ("attempted_at", "TIMESTAMP"),
    ("currency", "VARCHAR"),
    ("gateway", "VARCHAR"),
    ("approved", "BOOLEAN"),
    ("code", "VARCHAR"),
    ("decline_code", "VARCHAR"),
    ("seq", "BIGINT"),
)
TableColumns = tuple[tuple[str, str], ...]


def _ddl(table: str, columns: TableColumns, key: str) -> str:
    body = ", ".join(
        f"{name} {kind} {'' if name in _NULLABLE else 'NOT NULL'}" for name, kind in columns
    )
    return f"CREATE TABLE IF NOT EXISTS {table} ({body}, PRIMARY KEY ({key}))"


VOLUME_KEY = "merchant_id, livemode, day, currency, gateway, status"
_NULLABLE = frozenset({"code", "decline_code", "payment_day", "payment_currency"})
# A refund counts on its payment's day, in its payment's currency: copied onto the refund when
# both are in (in the transaction that brings the second), so the refund rate needs no join.
ATTRIBUTION_COLUMNS = (("payment_day", "DATE"), ("payment_currency", "VARCHAR"))

SCHEMA = (
    _ddl("payments", PAYMENT_COLUMNS, "id"),
    _ddl("refunds", REFUND_COLUMNS + ATTRIBUTION_COLUMNS, "id"),
    _ddl("authorizations", AUTHORIZATION_COLUMNS, "payment_intent_id, key"),
    # Per payment intent, the watermark its attempts were last rebuilt at: a projected attempt
    # at or below it is already among the rebuilt ones.
    "CREATE TABLE IF NOT EXISTS rebuilds (payment_intent_id VARCHAR PRIMARY KEY, "
    "through BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS progress (consumer VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, "
    "event_created_at TIMESTAMP, applied_at TIMESTAMP)",
    # The volume report, kept up to date in the transaction that changes a payment row: one
    # writer at a time, so moving a payment from its old group to its new one is exact.
    "CREATE TABLE IF NOT EXISTS volume (merchant_id VARCHAR NOT NULL, livemode BOOLEAN NOT NULL, "
    "day DATE NOT NULL, currency VARCHAR NOT NULL, gateway VARCHAR NOT NULL, "
    "status VARCHAR NOT NULL, count BIGINT NOT NULL, amount BIGINT NOT NULL, "
    f"PRIMARY KEY ({VOLUME_KEY}))",
)


def _naive(moment: datetime) -> datetime:
    """DuckDB's TIMESTAMP is naive; we store UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def payment_tuple(p: PaymentRow) -> tuple[Any, ...]:
    return (
        p.id,
        p.merchant_id,
        p.livemode,
        p.day,
        _naive(p.created_at),
        p.currency,
        p.gateway,
        p.status,
        p.capture_method,
        p.amount,
        p.amount_received,
        p.version,
    )


def refund_tuple(r: RefundRow) -> tuple[Any, ...]:
    return (
        r.id,
        r.merchant_id,
        r.livemode,
        r.payment_intent_id,
        r.day,
        _naive(r.created_at),
        r.currency,
        r.status,
        r.amount,
        r.version,
    )


def authorization_tuple(a: AuthorizationRow) -> tuple[Any, ...]:
    return (
        a.payment_intent_id,
        a.key,
        a.merchant_id,
        a.livemode,
        a.day,
        _naive(a.at),
        a.currency,
        a.gateway,
        a.approved,
        a.code,
        a.decline_code,
        a.seq,
    )


class _File:
    """This process's access to one DuckDB file, shared by every store object on it."""

    _registry: ClassVar[dict[Path, _File]] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def of(cls, path: Path) -> _File:
        resolved = path.resolve()
        with cls._registry_lock:
            if resolved not in cls._registry:
                cls._registry[resolved] = cls(resolved)
            return cls._registry[resolved]

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.conn: Connection | None = None
        self.read_only = False
        self.generation = 0
        self.opened_at = 0.0
        self.last_used = 0.0
        self.reopen_after = 0.0

    def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        """Run `work` on a connection (blocking: call it from a thread)."""
        with self.lock:
            if self.conn is not None and write and self.read_only:
                self._close()  # writing needs the file in read-write mode
            if self.conn is None:
                # After a long hold, give the other processes a moment with the file.
                time.sleep(max(0.0, self.reopen_after - time.monotonic()))
                self.conn = self._connect(read_only=not write)
                self.read_only = not write
                self.generation += 1
                self.opened_at = time.monotonic()
                threading.Thread(
                    target=self._release_when_idle, args=(self.generation,), daemon=True
                ).start()
            try:
                return work(self.conn)
            finally:
                self.last_used = time.monotonic()
                if self.last_used - self.opened_at >= MAX_HOLD_SECONDS:
                    self._close()
                    self.reopen_after = self.last_used + YIELD_SECONDS

    def close(self) -> None:
        with self.lock:
            self._close()

    def _close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()

    def _release_when_idle(self, generation: int) -> None:
        while True:
            time.sleep(IDLE_SECONDS)
            with self.lock:
                if self.conn is None or self.generation != generation:
                    return
                if time.monotonic() - self.last_used >= IDLE_SECONDS:
                    self._close()
                    return

    def _connect(self, *, read_only: bool) -> Connection:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise ReportingUnavailable(
                        f"the reporting store {self.path} stayed locked by another process"
                    ) from exc
            # Short, jittered pauses: a writer elsewhere yields the file for YIELD_SECONDS.
            time.sleep(0.005 + random.random() * 0.01)  # noqa: S311 - jitter, not a secret


def _transaction(conn: Connection, work: Callable[[Connection], T]) -> T:
    conn.execute("BEGIN TRANSACTION")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _stage(
    conn: Connection, name: str, columns: TableColumns, rows: Sequence[tuple[Any, ...]]
) -> str:
    """Load `rows` into a temporary table; returns its name."""
    table = f"stage_{name}"
    body = ", ".join(f"{column} {kind}" for column, kind in columns)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({body})")
    if len(rows) > CSV_THRESHOLD:
        _stage_csv(conn, table, columns, rows)
        return table
    width = len(columns)
    placeholders = "(" + ", ".join("?" * width) + ")"
    for first in range(0, len(rows), VALUES_CHUNK):
        chunk = rows[first : first + VALUES_CHUNK]
        conn.execute(
            f"INSERT INTO {table} VALUES " + ", ".join([placeholders] * len(chunk)),
            [value for row in chunk for value in row],
        )
    return table


_NULL = r"\N"


def _stage_csv(
    conn: Connection, table: str, columns: TableColumns, rows: Sequence[tuple[Any, ...]]
) -> None:
    handle, path = tempfile.mkstemp(suffix=".csv", prefix="strongroom-reporting-")
    try:
        with os.fdopen(handle, "w", newline="") as out:
            writer = csv.writer(out)
            for row in rows:
                writer.writerow(_NULL if value is None else value for value in row)
        types = ", ".join(f"'{column}': '{kind}'" for column, kind in columns)
        quoted = path.replace("'", "''")
        conn.execute(
            f"INSERT INTO {table} SELECT * FROM read_csv('{quoted}', header = false, "
            f"nullstr = '{_NULL}', columns = {{{types}}})"
        )
    finally:
        os.unlink(path)


def _newest(table: str, key: str, version: str) -> str:
    """The staged rows, one per key: the highest version."""
    return (
        f"SELECT * FROM {table} "
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {version} DESC) = 1"
    )


def _upsert_newer(conn: Connection, table: str, staged: str, columns: TableColumns) -> None:
    names = ", ".join(name for name, _ in columns)
    assignments = ", ".join(f"{name} = excluded.{name}" for name, _ in columns if name != "id")
    conn.execute(
        f"INSERT INTO {table} ({names}) {_newest(staged, 'id', 'version')} "
        f"ON CONFLICT (id) DO UPDATE SET {assignments} WHERE excluded.version > {table}.version"
    )


def _upsert_payments(conn: Connection, staged: str) -> None:
    """Payment rows newest-wins, and the volume groups they leave and join."""
    newest = _newest(staged, "id", "version")
    conn.execute(
        f"INSERT INTO volume SELECT {VOLUME_KEY}, sum(n)::BIGINT, sum(a)::BIGINT FROM ("
        f"SELECT s.merchant_id, s.livemode, s.day, s.currency, s.gateway, s.status, "
        f"1 AS n, s.amount AS a FROM ({newest}) s LEFT JOIN payments p ON p.id = s.id "
        "WHERE p.id IS NULL OR s.version > p.version UNION ALL "
        "SELECT p.merchant_id, p.livemode, p.day, p.currency, p.gateway, p.status, -1, -p.amount "
        f"FROM ({newest}) s JOIN payments p ON p.id = s.id WHERE s.version > p.version"
        f") GROUP BY ALL ON CONFLICT ({VOLUME_KEY}) DO UPDATE "
        "SET count = volume.count + excluded.count, amount = volume.amount + excluded.amount"
    )
    _upsert_newer(conn, "payments", staged, PAYMENT_COLUMNS)


def _fill_volume(conn: Connection) -> None:
    """A file written before the volume table existed: build it from the payment rows."""
    (groups,) = conn.execute("SELECT count(*) FROM volume").fetchone() or (0,)
    if not groups:
        conn.execute(
            f"INSERT INTO volume SELECT {VOLUME_KEY}, count(*), sum(amount)::BIGINT "
            f"FROM payments GROUP BY {VOLUME_KEY}"
        )


def _attribute_refunds(conn: Connection) -> None:
    """Give refunds still waiting for their payment (usually only this batch's) its day and
    currency. A payment's day and currency never change, so this is done once per refund."""
    conn.execute(
        "UPDATE refunds SET payment_day = p.day, payment_currency = p.currency FROM payments p "
        "WHERE refunds.payment_day IS NULL AND p.id = refunds.payment_intent_id"
    )


def _where(query: ReportQuery, day: str = "day") -> tuple[str, list[Any]]:
    clauses = ["livemode = ?"]
    params: list[Any] = [query.livemode]
    if query.merchant_id is not None:
        clauses.append("merchant_id = ?")
        params.append(query.merchant_id)
    if query.start is not None:
        clauses.append(f"{day} >= ?")
        params.append(query.start)
    if query.end is not None:
        clauses.append(f"{day} <= ?")
        params.append(query.end)
    return " AND ".join(clauses), params


def report_sql(name: ReportName, query: ReportQuery) -> tuple[str, list[Any]]:
    where, params = _where(query)
    match name:
        case ReportName.VOLUME:
            # Sums as BIGINT: DuckDB's default (HUGEINT) is several times slower to hand over.
            sql = (
                "SELECT day, currency, gateway, status, sum(count)::BIGINT AS count, "
                "sum(amount)::BIGINT AS amount FROM volume "
                f"WHERE {where} GROUP BY day, currency, gateway, status HAVING sum(count) <> 0"
            )
        case ReportName.AUTHORIZATION_RATE:
            sql = (
                "SELECT day, currency, gateway, count(*) AS attempts, "
                "count(*) FILTER (WHERE approved) AS approved FROM authorizations "
                f"WHERE {where} GROUP BY day, currency, gateway"
            )
        case ReportName.DECLINE_REASONS:
            sql = (
                "SELECT code, decline_code, count(*) AS count FROM authorizations "
                f"WHERE NOT approved AND {where} GROUP BY code, decline_code"
            )
        case ReportName.REFUND_RATE:
            # Refunds count on their payment's day: the rate is of that day's captured money.
            refund_where, refund_params = _where(query, day="payment_day")
            sql = (
                "SELECT day, currency, sum(captured)::BIGINT AS captured_amount, "
                "sum(refunded)::BIGINT AS refunded_amount, sum(refunds)::BIGINT AS refunds FROM ("
                "SELECT day, currency, sum(amount_received) AS captured, 0 AS refunded, "
                f"0 AS refunds FROM payments WHERE amount_received > 0 AND {where} "
                "GROUP BY day, currency UNION ALL "
                "SELECT payment_day, payment_currency, 0, sum(amount), count(*) FROM refunds "
                f"WHERE status = 'succeeded' AND payment_day IS NOT NULL AND {refund_where} "
                "GROUP BY payment_day, payment_currency"
                ") GROUP BY day, currency HAVING sum(captured) > 0"
            )
            params = params + refund_params
    return sql, params


class DuckDBStore(ReportingStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _File.of(path)
        self._ready = False

    @classmethod
    def from_url(cls, url: str) -> DuckDBStore:
        # duckdb:///relative/path or duckdb:////absolute/path, like SQLite URLs.
        path = url.removeprefix("duckdb://").removeprefix("/")
        if not path or path == ":memory:":
            raise ValueError("STRONGROOM_REPORTING_URL: duckdb:///<file> needs a file path")
        return cls(Path(path))

    async def _run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        if not self._ready:
            await self.start()
        return await asyncio.to_thread(self._file.run, work, write=write)

    async def start(self) -> None:
        if self._ready:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def create(conn: Connection) -> None:
            for statement in SCHEMA:
                conn.execute(statement)
            _fill_volume(conn)

        await asyncio.to_thread(self._file.run, create, write=True)
        self._ready = True

    async def apply(self, changes: Changes) -> None:
        def work(conn: Connection) -> None:
            if changes.payments:
                staged = _stage(
                    conn, "payments", PAYMENT_COLUMNS, [payment_tuple(p) for p in changes.payments]
                )
                _upsert_payments(conn, staged)
            if changes.refunds:
                staged = _stage(
                    conn, "refunds", REFUND_COLUMNS, [refund_tuple(r) for r in changes.refunds]
                )
                _upsert_newer(conn, "refunds", staged, REFUND_COLUMNS)
            if changes.payments or changes.refunds:
                _attribute_refunds(conn)
            if changes.authorizations:
                staged = _stage(
                    conn,
                    "authorizations",
                    AUTHORIZATION_COLUMNS,
                    [authorization_tuple(a) for a in changes.authorizations],
                )
                conn.execute(
                    "INSERT INTO authorizations SELECT s.* FROM ("
                    f"{_newest(staged, 'payment_intent_id, key', 'seq')}) s "
                    "LEFT JOIN rebuilds r ON r.payment_intent_id = s.payment_intent_id "
                    "WHERE s.seq > coalesce(r.through, 0) ON CONFLICT DO NOTHING"
                )
            if changes.newest_seq:
                created = changes.newest_created_at
                applied = changes.applied_at
                conn.execute(
                    "INSERT INTO progress VALUES (?, ?, ?, ?) ON CONFLICT (consumer) DO UPDATE "
                    "SET seq = greatest(progress.seq, excluded.seq), "
                    "event_created_at = greatest(progress.event_created_at, "
                    "excluded.event_created_at), applied_at = excluded.applied_at",
                    [
                        CONSUMER,
                        changes.newest_seq,
                        None if created is None else _naive(created),
                        None if applied is None else _naive(applied),
                    ],
                )

        await self._run(lambda conn: _transaction(conn, work), write=True)

    async def rebuild(self, batch: Rebuilt) -> None:
        def work(conn: Connection) -> None:
            if batch.payments:
                staged = _stage(
                    conn, "payments", PAYMENT_COLUMNS, [payment_tuple(p) for p in batch.payments]
                )
                _upsert_payments(conn, staged)
            if batch.refunds:
                staged = _stage(
                    conn, "refunds", REFUND_COLUMNS, [refund_tuple(r) for r in batch.refunds]
                )
                _upsert_newer(conn, "refunds", staged, REFUND_COLUMNS)
            _attribute_refunds(conn)
            if not batch.payment_intent_ids:
                return
            ids = _stage(
                conn,
                "ids",
                (("payment_intent_id", "VARCHAR"),),
                [(pi,) for pi in batch.payment_intent_ids],
            )
            # The rebuilt attempts replace whatever was projected up to the watermark.
            conn.execute(
                f"DELETE FROM authorizations WHERE payment_intent_id IN "
                f"(SELECT payment_intent_id FROM {ids}) AND seq <= ?",
                [batch.through],
            )
            if batch.authorizations:
                staged = _stage(
                    conn,
                    "authorizations",
                    AUTHORIZATION_COLUMNS,
                    [authorization_tuple(a) for a in batch.authorizations],
                )
                assignments = ", ".join(
                    f"{name} = excluded.{name}"
                    for name, _ in AUTHORIZATION_COLUMNS
                    if name not in ("payment_intent_id", "key")
                )
                newest = _newest(staged, "payment_intent_id, key", "seq")
                conn.execute(
                    f"INSERT INTO authorizations {newest} "
                    f"ON CONFLICT (payment_intent_id, key) DO UPDATE SET {assignments} "
                    "WHERE excluded.seq > authorizations.seq"
                )
            conn.execute(
                f"INSERT INTO rebuilds SELECT DISTINCT payment_intent_id, ? FROM {ids} "
                "ON CONFLICT (payment_intent_id) DO UPDATE "
                "SET through = greatest(rebuilds.through, excluded.through)",
                [batch.through],
            )

        await self._run(lambda conn: _transaction(conn, work), write=True)

    async def query(self, name: ReportName, query: ReportQuery) -> list[Row]:
        sql, params = report_sql(name, query)

        def work(conn: Connection) -> list[Row]:
            cursor = conn.execute(sql, params)
            columns = [d[0] for d in cursor.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

        return await self._run(work, write=False)

    async def lag(self) -> Lag:
        def work(conn: Connection) -> tuple[Any, ...] | None:
            return conn.execute(
                "SELECT seq, event_created_at, applied_at FROM progress WHERE consumer = ?",
                [CONSUMER],
            ).fetchone()

        row = await self._run(work, write=False)
        if row is None:
            return Lag(seq=0, event_created_at=None, applied_at=None)
        return Lag(seq=int(row[0]), event_created_at=_aware(row[1]), applied_at=_aware(row[2]))

    async def close(self) -> None:
        await asyncio.to_thread(self._file.close)
