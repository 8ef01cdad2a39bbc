"""One database transaction with the repository bound to it. It rolls back unless the handler
commits, so an exception anywhere leaves nothing half-written. On commit it writes the events the
transaction's aggregates raised to the outbox, in the same transaction (the transactional outbox):
an event exists exactly when its change does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from strongroom.adapters.db import outbox_store
from strongroom.adapters.db.engine import Engines
from strongroom.adapters.db.repository import Repository
from strongroom.domain.clock import Clock, SystemClock
from strongroom.domain.events import EventType
from strongroom.domain.ids import new_id

# An object as the API shows it (a dict with its "object" name): events carry it as their data.
Snapshot = Callable[[object], dict[str, Any]]


class Transaction:
    def __init__(self, repo: Repository, clock: Clock, snapshot: Snapshot) -> None:
        self.repo = repo
        self._clock = clock
        self._snapshot = snapshot
        self._emitted: list[dict[str, Any]] = []
        self._committed = False

    def emit(
        self,
        event_type: EventType,
        *,
        merchant_id: str,
        livemode: bool,
        aggregate: tuple[str, str],
        data: dict[str, Any],
    ) -> None:
        """An event about something that is not one of the repository's aggregates (a webhook
        endpoint, say), written to the outbox with this transaction."""
        self._emitted.append(
            self._row(event_type, merchant_id, livemode, aggregate[0], aggregate[1], data)
        )

    async def commit(self) -> None:
        rows = [
            self._row(event, obj.merchant_id, obj.livemode, data["object"], obj.id, data)
            for event, obj in self.repo.raised
            for data in (self._snapshot(obj),)  # the state this transaction commits
        ]
        await outbox_store.add(self.repo.conn, rows + self._emitted)
        self.repo.raised.clear()
        self._emitted.clear()
        await self.repo.conn.commit()
        self._committed = True

    def _row(
        self,
        event_type: EventType,
        merchant_id: str,
        livemode: bool,
        aggregate_type: str,
        aggregate_id: str,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "id": new_id("evt"),
            "type": str(event_type),
            "merchant_id": merchant_id,
            "livemode": livemode,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "created_at": self._clock.now(),
            "data": data,
        }


def _no_snapshot(obj: object) -> dict[str, Any]:
    raise TypeError(f"no snapshot for {type(obj).__name__}: bootstrap wires one")


class UnitOfWork:
    def __init__(
        self, engines: Engines, *, clock: Clock | None = None, snapshot: Snapshot = _no_snapshot
    ) -> None:
        self.engines = engines
        self.clock = clock or SystemClock()
        self.render = snapshot

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        async with self.engines.write.connect() as conn:
            await conn.begin()
            tx = Transaction(Repository(conn), self.clock, self.render)
            try:
                yield tx
            finally:
                if not tx._committed:
                    await conn.rollback()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Repository]:
        """A read-only snapshot; never takes SQLite's write lock."""
        async with self.engines.read.connect() as conn:
            await conn.begin()
            try:
                yield Repository(conn)
            finally:
                await conn.rollback()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Repository]:
        """A read-only transaction that sees one snapshot however many statements it runs:
        REPEATABLE READ on PostgreSQL (whose default, READ COMMITTED, sees each statement's own
        moment); SQLite's read transactions already work this way."""
        async with self.engines.read.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            await conn.begin()
            try:
                yield Repository(conn)
            finally:
                await conn.rollback()
