"""One database transaction with the repository bound to it. It rolls back unless the handler
commits, so an exception anywhere leaves nothing half-written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from strongroom.adapters.db.engine import Engines
from strongroom.adapters.db.repository import Repository


class Transaction:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._committed = False

    async def commit(self) -> None:
        await self.repo.conn.commit()
        self._committed = True


class UnitOfWork:
    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        async with self.engines.write.connect() as conn:
            await conn.begin()
            tx = Transaction(Repository(conn))
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
