"""Helpers shared by every test tier: a movable clock, service gates, database provisioning."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

REQUIRE_SERVICES = os.environ.get("STRONGROOM_REQUIRE_SERVICES") == "1"
PG_DSN = os.environ.get("STRONGROOM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
# Called with a database's name just before pg_database drops it (the leak scan dumps it).
BEFORE_DROP: list[Callable[[str], None]] = []


class FakeClock:
    """A clock tests move by hand; nothing in a test waits on real time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


def service_missing(name: str, why: str) -> None:
    """Skip with a reason, or fail when CI demands every service (STRONGROOM_REQUIRE_SERVICES=1)."""
    message = f"{name} is not available: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (STRONGROOM_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _pg_dsn(database: str) -> str:
    base, _, _ = PG_DSN.rpartition("/")
    return f"{base}/{database}"


def asyncpg_url(database: str) -> str:
    return _pg_dsn(database).replace("postgresql://", "postgresql+asyncpg://", 1)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_execute(sql: str) -> None:
    asyncio.run(_admin(sql))


def pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        pg_execute("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def pg_database(prefix: str, *, template: str | None = None) -> Iterator[str]:
    """A uniquely named PostgreSQL database (a copy of `template`, if given), dropped after."""
    name = unique_name(prefix)
    pg_execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield name
    finally:
        try:
            for hook in BEFORE_DROP:
                hook(name)
        finally:
            pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def row_counts(engine: object) -> dict[str, int]:
    """How many rows every table holds: 'nothing was written' is then a dict comparison."""
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import AsyncEngine

    from strongroom.adapters.db.tables import metadata

    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as conn:
        return {
            name: int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
            for name, table in metadata.tables.items()
        }
