"""The reporting store port: the read side of CQRS. The projector writes what events imply
(the newest state of each payment intent and refund, one fact per authorization attempt); the
standard reports are named queries over it. Reports served to users never touch the write
store, so a heavy report cannot slow a payment down.

Adapters: `duckdb:///<file>` (embedded) and `clickhouse://host:9000/<database>`. Both keep the
same semantics: a row's `version` is the outbox `seq` of the event that wrote it and the newest
version wins whatever order rows arrive in; writing the same rows twice changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any


class ReportName(StrEnum):
    """The standard reports. Disputes (count, amount and rate by reason) come with the dispute
    events; they will be one more name here and one more query per store."""

    VOLUME = "volume"
    AUTHORIZATION_RATE = "authorization_rate"
    DECLINE_REASONS = "decline_reasons"
    REFUND_RATE = "refund_rate"


class ReportingUnavailable(RuntimeError):
    """The reporting store could not be reached (or stayed locked by another process)."""


@dataclass(frozen=True)
class ReportQuery:
    """What every report is filtered by. Days are UTC calendar days, both ends included."""

    livemode: bool
    merchant_id: str | None = None  # None: every merchant (the operator's command line)
    start: date | None = None
    end: date | None = None


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class PaymentRow:
    """A payment intent as of the event with outbox seq `version`."""

    id: str
    merchant_id: str
    livemode: bool
    created_at: datetime
    currency: str
    gateway: str
    status: str
    capture_method: str
    amount: int
    amount_received: int
    version: int

    @property
    def day(self) -> date:
        return utc_day(self.created_at)


@dataclass(frozen=True)
class RefundRow:
    id: str
    merchant_id: str
    livemode: bool
    payment_intent_id: str
    created_at: datetime
    currency: str
    status: str
    amount: int
    version: int

    @property
    def day(self) -> date:
        return utc_day(self.created_at)


@dataclass(frozen=True)
class AuthorizationRow:
    """One authorization attempt: approved, or declined with the gateway's codes. `key` names
    the attempt (the event id when projected, the gateway operation or ledger transaction id
    when rebuilt from the write store); `seq` is the event's seq, or the rebuild's watermark."""

    payment_intent_id: str
    key: str
    merchant_id: str
    livemode: bool
    at: datetime
    currency: str
    gateway: str
    approved: bool
    code: str | None
    decline_code: str | None
    seq: int

    @property
    def day(self) -> date:
        return utc_day(self.at)


@dataclass(frozen=True)
class Changes:
    """What a batch of events implies, for `ReportingStore.apply`."""

    payments: list[PaymentRow] = field(default_factory=list)
    refunds: list[RefundRow] = field(default_factory=list)
    authorizations: list[AuthorizationRow] = field(default_factory=list)
    newest_seq: int = 0  # the highest seq in the batch, and when that event was committed
    newest_created_at: datetime | None = None
    applied_at: datetime | None = None


@dataclass(frozen=True)
class Rebuilt:
    """One backfill batch: payment intents, their refunds and their authorization attempts as
    the write store held them when no event with a seq above `through` had been committed for
    them (and every event at or below it had). Every row carries `through` as its version, so
    an event applied later wins exactly when it is newer than what was read."""

    through: int
    payment_intent_ids: list[str]
    payments: list[PaymentRow]
    refunds: list[RefundRow]
    authorizations: list[AuthorizationRow]


@dataclass(frozen=True)
class Lag:
    """How far the projection has got: the highest event seq applied, when that event was
    committed, and when it was applied. Observability compares these with the outbox's newest
    seq and with the clock."""

    seq: int
    event_created_at: datetime | None
    applied_at: datetime | None


Row = dict[str, Any]


class ReportingStore(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Create the schema (and, for ClickHouse, the database) when missing; idempotent.
        Every other method calls it first, so a process that only reads needs no set-up."""

    @abstractmethod
    async def apply(self, changes: Changes) -> None:
        """Write projected rows: a payment or refund row replaces the stored one only when its
        version is higher; an attempt is added once (by key), and not at all when a rebuild
        already covered its seq."""

    @abstractmethod
    async def rebuild(self, batch: Rebuilt) -> None:
        """Write one backfill batch: its rows replace older ones, and its attempts replace every
        stored attempt of those payment intents with a seq at or below `through`."""

    @abstractmethod
    async def query(self, name: ReportName, query: ReportQuery) -> list[Row]:
        """The report's rows, unsorted, with integer measures (rates are computed by the
        caller, so every store gives the same figures)."""

    @abstractmethod
    async def lag(self) -> Lag: ...

    @abstractmethod
    async def close(self) -> None: ...


def reporting_store_from_url(url: str) -> ReportingStore:
    if url.startswith("duckdb://"):
        from strongroom.adapters.reporting.duckdb import DuckDBStore

        return DuckDBStore.from_url(url)
    if url.startswith("clickhouse://"):
        from strongroom.adapters.reporting.clickhouse import ClickHouseStore

        return ClickHouseStore.from_url(url)
    raise ValueError(
        f"STRONGROOM_REPORTING_URL must be duckdb:///<file> or clickhouse://host:9000/<db>, "
        f"not {url!r}"
    )
