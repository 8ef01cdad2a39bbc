"""The outbox's rows and the workers' leases: reads and writes over the caller's connection."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.db import tables as t
from strongroom.domain.events import Event

_o = t.outbox
_UNPUBLISHED = select(_o).where(_o.c.published_at.is_(None)).order_by(_o.c.seq)


async def add(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert events (without `seq`, which the database assigns in insertion order)."""
    if rows:
        await conn.execute(insert(_o), list(rows))


async def unpublished(conn: AsyncConnection, limit: int) -> list[Event]:
    rows = (await conn.execute(_UNPUBLISHED.limit(limit))).all()
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


async def mark_published(conn: AsyncConnection, seqs: Sequence[int], now: datetime) -> None:
    await conn.execute(
        update(_o).where(_o.c.seq.in_(seqs), _o.c.published_at.is_(None)).values(published_at=now)
    )


async def backlog(conn: AsyncConnection) -> tuple[int, datetime | None]:
    """How many events wait to be published, and when the oldest was committed."""
    count, oldest = (
        await conn.execute(
            select(func.count(), func.min(_o.c.created_at)).where(_o.c.published_at.is_(None))
        )
    ).one()
    return int(count), oldest


async def prune(conn: AsyncConnection, published_before: datetime) -> int:
    result = await conn.execute(delete(_o).where(_o.c.published_at < published_before))
    return int(result.rowcount)


async def take_lease(
    conn: AsyncConnection, name: str, holder: str, now: datetime, until: datetime
) -> bool:
    """Take or renew the lease `name` for `holder`, unless another holder's has not expired."""
    leases = t.worker_leases
    renewed = await conn.execute(
        update(leases)
        .where(
            leases.c.name == name,
            or_(leases.c.holder == holder, leases.c.expires_at < now),
        )
        .values(holder=holder, expires_at=until)
    )
    if renewed.rowcount:
        return True
    # Nobody has held it yet, or someone else holds it: only a first insert succeeds.
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    created = await conn.execute(
        dialect_insert(leases)
        .values(name=name, holder=holder, expires_at=until)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return bool(created.rowcount)


async def release_lease(conn: AsyncConnection, name: str, holder: str) -> None:
    leases = t.worker_leases
    await conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
