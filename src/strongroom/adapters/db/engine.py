"""Async engines for SQLite and PostgreSQL with the settings each needs to be safe.

SQLite gets WAL (readers never block the writer), foreign keys on, a busy timeout, and
`BEGIN IMMEDIATE` on the write engine so a write transaction takes the lock up front instead of
failing with SQLITE_BUSY halfway through. Reads use a second engine with plain deferred BEGIN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Engines:
    """A write engine and a read engine; on PostgreSQL they are the same object."""

    write: AsyncEngine
    read: AsyncEngine

    async def dispose(self) -> None:
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()


def _sqlite_engine(url: str, begin: str) -> AsyncEngine:
    engine = create_async_engine(url, poolclass=NullPool if ":memory:" in url else None)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so our BEGIN below is the only one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def create_engines(database_url: str, *, pool_size: int = 10) -> Engines:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return Engines(
            write=_sqlite_engine(database_url, "BEGIN IMMEDIATE"),
            read=_sqlite_engine(database_url, "BEGIN"),
        )
    engine = create_async_engine(
        database_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False
    )
    return Engines(write=engine, read=engine)


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for writes that are one statement each: on PostgreSQL every statement
    commits by itself (one round trip instead of BEGIN, statement, COMMIT). SQLite keeps its
    ordinary transaction, because our BEGIN IMMEDIATE listener owns its transaction control
    and a local commit costs no round trip anyway."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")
    else:
        async with engine.begin() as conn:
            yield conn
