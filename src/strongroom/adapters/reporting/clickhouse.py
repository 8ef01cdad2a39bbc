"""The scale-out reporting store: ClickHouse (`clickhouse://[user[:password]@]host:9000/<db>`),
over the native protocol (clickhouse-driver), in SQL that ClickHouse 18.16 runs.

ClickHouse has no upsert and no transactions, so nothing is updated in place. Every write is an
insert into a ReplacingMergeTree whose sorting key names the object (payment and refund rows:
merchant, mode, day, id; attempts: also their key, origin and seq), so re-inserting the same
rows collapses when parts merge; until they have merged, queries read with FINAL, which merges
at read time, so a duplicate or an older version is never counted. (FINAL reads only key
columns in WHERE: the day an object belongs to never changes, so filtering before the merge
cannot drop a newer version.)

A rebuild cannot delete the attempts it replaces, so the queries apply the rule instead: an
attempt projected from an event counts when its seq is above its payment intent's rebuild
watermark (or there is none); a rebuilt attempt counts when its seq is that watermark. The
watermark row is written after the rebuilt rows, so a rebuild that dies half-way changes
nothing that is counted.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from clickhouse_driver import Client  # type: ignore[import-untyped]
from clickhouse_driver.errors import Error as ClickHouseError  # type: ignore[import-untyped]

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
CONSUMER = "reporting"
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Never let the server move a filter into PREWHERE or a subquery on its own: FINAL must merge
# versions before any filter on a column that changes between them.
SETTINGS = {"enable_optimize_predicate_expression": 0, "max_query_size": 1_048_576}

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS payments (
        merchant_id String, livemode UInt8, day Date, id String, created_us Int64,
        currency String, gateway String, status String, capture_method String,
        amount Int64, amount_received Int64, version UInt64
    ) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(day)
      ORDER BY (merchant_id, livemode, day, id)""",
    """CREATE TABLE IF NOT EXISTS refunds (
        merchant_id String, livemode UInt8, day Date, id String, payment_intent_id String,
        created_us Int64, currency String, status String, amount Int64, version UInt64
    ) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(day)
      ORDER BY (merchant_id, livemode, day, id)""",
    # origin 0: projected from an event (seq = the event's); 1: rebuilt (seq = the watermark).
    # Keyed down to seq, so two rebuilds' rows for one attempt both stay until the rule picks.
    """CREATE TABLE IF NOT EXISTS authorizations (
        merchant_id String, livemode UInt8, day Date, payment_intent_id String, key String,
        origin UInt8, seq UInt64, attempted_us Int64, currency String, gateway String,
        approved UInt8, code String, decline_code String
    ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(day)
      ORDER BY (merchant_id, livemode, day, payment_intent_id, key, origin, seq)""",
    """CREATE TABLE IF NOT EXISTS rebuilds (
        merchant_id String, livemode UInt8, payment_intent_id String, through UInt64
    ) ENGINE = ReplacingMergeTree(through) ORDER BY (merchant_id, livemode, payment_intent_id)""",
    """CREATE TABLE IF NOT EXISTS progress (
        consumer String, seq UInt64, event_created_us Int64, applied_us Int64
    ) ENGINE = ReplacingMergeTree(seq) ORDER BY consumer""",
)

PAYMENT_INSERT = (
    "INSERT INTO payments (merchant_id, livemode, day, id, created_us, currency, gateway, "
    "status, capture_method, amount, amount_received, version) VALUES"
)
REFUND_INSERT = (
    "INSERT INTO refunds (merchant_id, livemode, day, id, payment_intent_id, created_us, "
    "currency, status, amount, version) VALUES"
)
AUTHORIZATION_INSERT = (
    "INSERT INTO authorizations (merchant_id, livemode, day, payment_intent_id, key, origin, "
    "seq, attempted_us, currency, gateway, approved, code, decline_code) VALUES"
)


def _us(moment: datetime) -> int:
    """Microseconds since the epoch: ClickHouse 18.16's DateTime holds whole seconds and reads
    naive values in the server's time zone; an integer has neither problem."""
    return int(moment.timestamp() * 1_000_000)


def _from_us(value: int) -> datetime | None:
    return None if value <= 0 else datetime.fromtimestamp(value / 1_000_000, UTC)


def payment_values(p: PaymentRow) -> tuple[Any, ...]:
    return (
        p.merchant_id,
        int(p.livemode),
        p.day,
        p.id,
        _us(p.created_at),
        p.currency,
        p.gateway,
        p.status,
        p.capture_method,
        p.amount,
        p.amount_received,
        p.version,
    )


def refund_values(r: RefundRow) -> tuple[Any, ...]:
    return (
        r.merchant_id,
        int(r.livemode),
        r.day,
        r.id,
        r.payment_intent_id,
        _us(r.created_at),
        r.currency,
        r.status,
        r.amount,
        r.version,
    )


def authorization_values(a: AuthorizationRow, origin: int) -> tuple[Any, ...]:
    return (
        a.merchant_id,
        int(a.livemode),
        a.day,
        a.payment_intent_id,
        a.key,
        origin,
        a.seq,
        _us(a.at),
        a.currency,
        a.gateway,
        int(a.approved),
        a.code or "",  # no Nullable here: '' stands for "none"
        a.decline_code or "",
    )


def _where(query: ReportQuery, *, days: bool = True) -> tuple[str, dict[str, Any]]:
    clauses = ["livemode = %(livemode)s"]
    params: dict[str, Any] = {"livemode": int(query.livemode)}
    if query.merchant_id is not None:
        clauses.append("merchant_id = %(merchant_id)s")
        params["merchant_id"] = query.merchant_id
    if days and query.start is not None:
        clauses.append("day >= %(start)s")
        params["start"] = query.start
    if days and query.end is not None:
        clauses.append("day <= %(end)s")
        params["end"] = query.end
    return " AND ".join(clauses), params


def _counted_attempts(where: str, owner: str) -> str:
    """Attempts after dedup and the rebuild rule, as a subquery."""
    return (
        "SELECT day, currency, gateway, approved, code, decline_code FROM ("
        "SELECT payment_intent_id, day, currency, gateway, approved, code, decline_code, "
        f"origin, seq FROM authorizations FINAL WHERE {where}"
        ") ANY LEFT JOIN ("
        "SELECT payment_intent_id, max(through) AS through FROM rebuilds "
        f"WHERE {owner} GROUP BY payment_intent_id"
        ") USING payment_intent_id "
        "WHERE (origin = 0 AND seq > through) OR (origin = 1 AND seq = through)"
    )


def report_sql(name: ReportName, query: ReportQuery) -> tuple[str, dict[str, Any]]:
    where, params = _where(query)
    owner, _ = _where(query, days=False)
    match name:
        case ReportName.VOLUME:
            sql = (
                "SELECT day, currency, gateway, status, count() AS count, sum(amount) AS amount "
                f"FROM payments FINAL WHERE {where} GROUP BY day, currency, gateway, status"
            )
        case ReportName.AUTHORIZATION_RATE:
            sql = (
                "SELECT day, currency, gateway, count() AS attempts, sum(approved) AS approved "
                f"FROM ({_counted_attempts(where, owner)}) GROUP BY day, currency, gateway"
            )
        case ReportName.DECLINE_REASONS:
            sql = (
                "SELECT code, decline_code, count() AS count "
                f"FROM ({_counted_attempts(where, owner)}) WHERE approved = 0 "
                "GROUP BY code, decline_code"
            )
        case ReportName.REFUND_RATE:
            sql = (
                "SELECT day, currency, sum(amount_received) AS captured_amount, "
                "sum(refunded_amount) AS refunded_amount, sum(refunds) AS refunds FROM ("
                "SELECT id AS payment_intent_id, day, currency, amount_received "
                f"FROM payments FINAL WHERE {where}"
                ") ANY LEFT JOIN ("
                "SELECT payment_intent_id, sum(amount) AS refunded_amount, count() AS refunds "
                "FROM (SELECT payment_intent_id, status, amount FROM refunds FINAL "
                f"WHERE {owner}) WHERE status = 'succeeded' GROUP BY payment_intent_id"
                ") USING payment_intent_id WHERE amount_received > 0 GROUP BY day, currency"
            )
    return sql, params


class ClickHouseStore(ReportingStore):
    def __init__(
        self, *, host: str, port: int, database: str, user: str = "default", password: str = ""
    ) -> None:
        if not _DATABASE.match(database):
            raise ValueError(f"not a ClickHouse database name: {database!r}")
        self.host = host
        self.port = port
        self.database = database
        self._user = user
        self._password = password
        self._client: Client | None = None
        self._lock = threading.Lock()  # a clickhouse-driver Client serves one query at a time
        self._ready = False

    @classmethod
    def from_url(cls, url: str) -> ClickHouseStore:
        parts = urlsplit(url)
        database = parts.path.lstrip("/") or "strongroom_reporting"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 9000,
            database=database,
            user=unquote(parts.username) if parts.username else "default",
            password=unquote(parts.password) if parts.password else "",
        )

    def _connect(self, database: str) -> Client:
        return Client(
            self.host,
            self.port,
            database=database,
            user=self._user,
            password=self._password,
            connect_timeout=5,
            send_receive_timeout=60,
            settings=SETTINGS,
        )

    def _call(self, work: Callable[[Client], T]) -> T:
        with self._lock:
            if self._client is None:
                self._client = self._connect(self.database)
            try:
                return work(self._client)
            except (ClickHouseError, OSError, EOFError) as exc:
                # The driver reconnects on its next query; this one is the caller's to retry.
                raise ReportingUnavailable(f"ClickHouse at {self.host}:{self.port}: {exc}") from exc

    async def _run(self, work: Callable[[Client], T]) -> T:
        if not self._ready:
            await self.start()
        return await asyncio.to_thread(self._call, work)

    async def start(self) -> None:
        if self._ready:
            return

        def create() -> None:
            admin = self._connect("default")
            try:
                admin.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            finally:
                admin.disconnect()

            def tables(client: Client) -> None:
                for statement in SCHEMA:
                    client.execute(statement)

            self._call(tables)

        try:
            await asyncio.to_thread(create)
        except (ClickHouseError, OSError, EOFError) as exc:
            raise ReportingUnavailable(f"ClickHouse at {self.host}:{self.port}: {exc}") from exc
        self._ready = True

    async def apply(self, changes: Changes) -> None:
        def work(client: Client) -> None:
            if changes.payments:
                client.execute(PAYMENT_INSERT, [payment_values(p) for p in changes.payments])
            if changes.refunds:
                client.execute(REFUND_INSERT, [refund_values(r) for r in changes.refunds])
            if changes.authorizations:
                client.execute(
                    AUTHORIZATION_INSERT,
                    [authorization_values(a, 0) for a in changes.authorizations],
                )
            if changes.newest_seq:
                created, applied = changes.newest_created_at, changes.applied_at
                client.execute(
                    "INSERT INTO progress (consumer, seq, event_created_us, applied_us) VALUES",
                    [
                        (
                            CONSUMER,
                            changes.newest_seq,
                            0 if created is None else _us(created),
                            0 if applied is None else _us(applied),
                        )
                    ],
                )

        await self._run(work)

    async def rebuild(self, batch: Rebuilt) -> None:
        owners = {(p.id, p.merchant_id, p.livemode) for p in batch.payments}

        def work(client: Client) -> None:
            if batch.payments:
                client.execute(PAYMENT_INSERT, [payment_values(p) for p in batch.payments])
            if batch.refunds:
                client.execute(REFUND_INSERT, [refund_values(r) for r in batch.refunds])
            if batch.authorizations:
                client.execute(
                    AUTHORIZATION_INSERT,
                    [authorization_values(a, 1) for a in batch.authorizations],
                )
            # Last: until this row exists, the rebuilt attempts are not counted.
            if owners:
                client.execute(
                    "INSERT INTO rebuilds (merchant_id, livemode, payment_intent_id, through) "
                    "VALUES",
                    [(m, int(live), pi, batch.through) for pi, m, live in sorted(owners)],
                )

        await self._run(work)

    async def query(self, name: ReportName, query: ReportQuery) -> list[Row]:
        sql, params = report_sql(name, query)

        def work(client: Client) -> list[Row]:
            rows, columns = client.execute(sql, params, with_column_types=True)
            names = [column for column, _ in columns]
            result = [dict(zip(names, row, strict=True)) for row in rows]
            for row in result:
                for key in ("code", "decline_code"):
                    if key in row and row[key] == "":
                        row[key] = None
            return result

        return await self._run(work)

    async def lag(self) -> Lag:
        def work(client: Client) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = client.execute(
                "SELECT max(seq), max(event_created_us), max(applied_us) FROM progress "
                "WHERE consumer = %(consumer)s",
                {"consumer": CONSUMER},
            )
            return rows

        rows = await self._run(work)
        seq, created, applied = rows[0] if rows else (0, 0, 0)
        return Lag(seq=int(seq), event_created_at=_from_us(created), applied_at=_from_us(applied))

    async def close(self) -> None:
        def disconnect() -> None:
            with self._lock:
                if self._client is not None:
                    self._client.disconnect()
                    self._client = None

        await asyncio.to_thread(disconnect)
