"""Merchant webhook endpoints, their sealed secrets, deliveries and attempts: reads and writes
over the caller's connection (and so the caller's transaction).

Every read a merchant can cause takes the merchant and mode, so an endpoint or delivery id from
another account is simply not found. The worker's reads (`lease_due`, `delivery_for_update`)
are the exception: they act for the installation, on rows the merchant's own writes created.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, case, delete, func, insert, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.sealed import SealedValue
from strongroom.domain.webhooks import (
    Attempt,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    EndpointStatus,
    WebhookEndpoint,
)

_e = t.webhook_endpoints
_s = t.webhook_endpoint_secrets
_d = t.webhook_deliveries
_a = t.webhook_attempts
# Spelled as a literal, not a bound parameter, so both databases can prove the query matches
# the partial index ix_webhook_deliveries_due (a prepared statement's generic plan cannot).
_PENDING = _d.c.status == literal_column(f"'{DeliveryStatus.PENDING.value}'")


@dataclass(frozen=True)
class Leased:
    """A delivery a worker holds until `locked_until`, with what sending it needs."""

    id: str
    endpoint_id: str
    merchant_id: str
    url: str
    event_id: str
    payload: str
    locked_until: datetime


@dataclass(frozen=True)
class StoredSecret:
    id: str
    endpoint_id: str
    merchant_id: str
    sealed: SealedValue


# --- endpoints ------------------------------------------------------------------------------------
def _endpoint(row: Row[Any]) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        merchant_id=row.merchant_id,
        livemode=row.livemode,
        url=row.url,
        enabled_events=list(row.enabled_events),
        description=row.description,
        metadata=dict(row.metadata),
        status=EndpointStatus(row.status),
        disabled_reason=DisabledReason(row.disabled_reason) if row.disabled_reason else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _endpoint_values(ep: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": ep.id,
        "merchant_id": ep.merchant_id,
        "livemode": ep.livemode,
        "url": ep.url,
        "enabled_events": list(ep.enabled_events),
        "description": ep.description,
        "metadata": dict(ep.metadata),
        "status": str(ep.status),
        "disabled_reason": str(ep.disabled_reason) if ep.disabled_reason else None,
        "created_at": ep.created_at,
        "updated_at": ep.updated_at,
    }


async def add_endpoint(conn: AsyncConnection, ep: WebhookEndpoint) -> None:
    await conn.execute(insert(_e).values(_endpoint_values(ep)))


async def save_endpoint(conn: AsyncConnection, ep: WebhookEndpoint) -> None:
    values = _endpoint_values(ep)
    del values["id"], values["merchant_id"], values["livemode"], values["created_at"]
    await conn.execute(update(_e).where(_e.c.id == ep.id).values(values))


async def get_endpoint(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    endpoint_id: str,
    *,
    lock: bool = False,
) -> WebhookEndpoint | None:
    query = select(_e).where(
        _e.c.id == endpoint_id, _e.c.merchant_id == merchant_id, _e.c.livemode == livemode
    )
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return _endpoint(row) if row is not None else None


async def endpoint_for_update(conn: AsyncConnection, endpoint_id: str) -> WebhookEndpoint | None:
    """The worker's view: by id alone, row-locked (PostgreSQL) so two workers deciding to
    disable it do so one after the other."""
    row = (await conn.execute(select(_e).where(_e.c.id == endpoint_id).with_for_update())).first()
    return _endpoint(row) if row is not None else None


async def enabled_endpoints(
    conn: AsyncConnection, merchant_id: str, livemode: bool
) -> list[WebhookEndpoint]:
    rows = (
        await conn.execute(
            select(_e).where(
                _e.c.merchant_id == merchant_id,
                _e.c.livemode == livemode,
                _e.c.status == EndpointStatus.ENABLED,
            )
        )
    ).all()
    return [_endpoint(r) for r in rows]


async def list_endpoints(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    *,
    limit: int,
    starting_after: str | None,
) -> tuple[list[WebhookEndpoint], bool] | None:
    """Newest first. None when `starting_after` names no endpoint in this scope."""
    in_scope = (_e.c.merchant_id == merchant_id, _e.c.livemode == livemode)
    query = select(_e).where(*in_scope)
    if starting_after is not None:
        cursor = (
            await conn.execute(
                select(_e.c.created_at, _e.c.id).where(_e.c.id == starting_after, *in_scope)
            )
        ).first()
        if cursor is None:
            return None
        query = query.where(_before(_e.c.created_at, _e.c.id, cursor.created_at, cursor.id))
    rows = (
        await conn.execute(query.order_by(_e.c.created_at.desc(), _e.c.id.desc()).limit(limit + 1))
    ).all()
    return [_endpoint(r) for r in rows[:limit]], len(rows) > limit


async def delete_endpoint(conn: AsyncConnection, endpoint_id: str) -> None:
    """The endpoint and everything hanging off it, children first (foreign keys)."""
    deliveries = select(_d.c.id).where(_d.c.endpoint_id == endpoint_id).scalar_subquery()
    await conn.execute(delete(_a).where(_a.c.delivery_id.in_(deliveries)))
    await conn.execute(delete(_d).where(_d.c.endpoint_id == endpoint_id))
    await conn.execute(delete(_s).where(_s.c.endpoint_id == endpoint_id))
    await conn.execute(delete(_e).where(_e.c.id == endpoint_id))


# --- secrets --------------------------------------------------------------------------------------
async def add_secret(
    conn: AsyncConnection,
    *,
    secret_id: str,
    endpoint_id: str,
    merchant_id: str,
    sealed: SealedValue,
    now: datetime,
) -> None:
    await conn.execute(
        insert(_s).values(
            id=secret_id,
            endpoint_id=endpoint_id,
            merchant_id=merchant_id,
            secret=sealed,
            created_at=now,
            expires_at=None,
        )
    )


async def retire_secrets(
    conn: AsyncConnection, endpoint_id: str, *, until: datetime, now: datetime
) -> None:
    """Make every active secret of the endpoint expire by `until` (one already due to expire
    sooner keeps its time), and forget those already expired."""
    await conn.execute(delete(_s).where(_s.c.endpoint_id == endpoint_id, _s.c.expires_at <= now))
    await conn.execute(
        update(_s)
        .where(_s.c.endpoint_id == endpoint_id)
        .values(
            expires_at=case(
                (or_(_s.c.expires_at.is_(None), _s.c.expires_at > until), until),
                else_=_s.c.expires_at,
            )
        )
    )


async def active_secrets(
    conn: AsyncConnection, endpoint_ids: Sequence[str], now: datetime
) -> dict[str, list[StoredSecret]]:
    """The secrets that sign for each endpoint now, newest first."""
    if not endpoint_ids:
        return {}
    rows = (
        await conn.execute(
            select(_s)
            .where(
                _s.c.endpoint_id.in_(list(endpoint_ids)),
                or_(_s.c.expires_at.is_(None), _s.c.expires_at > now),
            )
            .order_by(_s.c.created_at.desc(), _s.c.id)
        )
    ).all()
    found: dict[str, list[StoredSecret]] = defaultdict(list)
    for r in rows:
        found[r.endpoint_id].append(StoredSecret(r.id, r.endpoint_id, r.merchant_id, r.secret))
    return found


# --- deliveries -----------------------------------------------------------------------------------
def _delivery(row: Row[Any]) -> Delivery:
    return Delivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        merchant_id=row.merchant_id,
        livemode=row.livemode,
        event_id=row.event_id,
        event_type=row.event_type,
        payload=row.payload,
        status=DeliveryStatus(row.status),
        step=row.step,
        attempt_count=row.attempt_count,
        next_attempt_at=row.next_attempt_at,
        started_at=row.started_at,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


async def add_deliveries(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert deliveries, skipping any (endpoint, event) pair already there: an event the stream
    hands over again creates nothing new. Returns how many were new."""
    if not rows:
        return 0
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = await conn.execute(
        dialect_insert(_d).on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"]),
        list(rows),
    )
    return max(int(result.rowcount), 0)


async def lease_due(
    conn: AsyncConnection, now: datetime, until: datetime, limit: int
) -> list[Leased]:
    """Take up to `limit` due deliveries of enabled endpoints until `until`, oldest due first.

    On PostgreSQL the rows are locked FOR UPDATE SKIP LOCKED, so concurrent workers take
    disjoint sets without waiting on each other; on SQLite the write transaction's BEGIN
    IMMEDIATE lock does the same by running leases one after another. Either way the lease
    (locked_until) outlives the transaction: the caller commits before sending."""
    due = (
        select(_d.c.id)
        .join(_e, _e.c.id == _d.c.endpoint_id)
        .where(
            _PENDING,
            _d.c.next_attempt_at <= now,
            or_(_d.c.locked_until.is_(None), _d.c.locked_until < now),
            _e.c.status == EndpointStatus.ENABLED,
        )
        .order_by(_d.c.next_attempt_at)  # the due index's order: no sort before the LIMIT
        .limit(limit)
        .with_for_update(skip_locked=True, of=_d)
    )
    ids = list((await conn.execute(due)).scalars())
    if not ids:
        return []
    await conn.execute(update(_d).where(_d.c.id.in_(ids)).values(locked_until=until))
    rows = (
        await conn.execute(
            select(
                _d.c.id,
                _d.c.endpoint_id,
                _d.c.merchant_id,
                _e.c.url,
                _d.c.event_id,
                _d.c.payload,
            )
            .join(_e, _e.c.id == _d.c.endpoint_id)
            .where(_d.c.id.in_(ids))
            .order_by(_d.c.next_attempt_at, _d.c.id)
        )
    ).all()
    return [
        Leased(r.id, r.endpoint_id, r.merchant_id, r.url, r.event_id, r.payload, until)
        for r in rows
    ]


async def delivery_for_update(conn: AsyncConnection, delivery_id: str) -> Row[Any] | None:
    """The delivery's row (with its lease) locked for recording an attempt; None if its
    endpoint was deleted meanwhile."""
    query = select(_d).where(_d.c.id == delivery_id).with_for_update()
    return (await conn.execute(query)).first()


async def update_delivery(conn: AsyncConnection, delivery_id: str, **values: Any) -> None:
    await conn.execute(update(_d).where(_d.c.id == delivery_id).values(**values))


async def add_attempt(conn: AsyncConnection, delivery_id: str, attempt: Attempt) -> None:
    await conn.execute(
        insert(_a).values(
            delivery_id=delivery_id,
            attempted_at=attempt.attempted_at,
            status_code=attempt.status_code,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
            response_body=attempt.response_body,
        )
    )


async def last_success(conn: AsyncConnection, endpoint_id: str) -> datetime | None:
    latest: datetime | None = (
        await conn.execute(
            select(func.max(_d.c.delivered_at)).where(_d.c.endpoint_id == endpoint_id)
        )
    ).scalar_one()
    return latest


async def get_delivery(
    conn: AsyncConnection, merchant_id: str, livemode: bool, delivery_id: str
) -> Delivery | None:
    row = (
        await conn.execute(
            select(_d).where(
                _d.c.id == delivery_id, _d.c.merchant_id == merchant_id, _d.c.livemode == livemode
            )
        )
    ).first()
    if row is None:
        return None
    delivery = _delivery(row)
    delivery.attempts = (await attempts_of(conn, [delivery.id]))[delivery.id]
    return delivery


async def list_deliveries(
    conn: AsyncConnection, endpoint_id: str, *, limit: int, starting_after: str | None
) -> tuple[list[Delivery], bool] | None:
    """An endpoint's deliveries, newest first, each with its attempts (oldest first). None
    when `starting_after` names no delivery of this endpoint."""
    query = select(_d).where(_d.c.endpoint_id == endpoint_id)
    if starting_after is not None:
        cursor = (
            await conn.execute(
                select(_d.c.created_at, _d.c.id).where(
                    _d.c.id == starting_after, _d.c.endpoint_id == endpoint_id
                )
            )
        ).first()
        if cursor is None:
            return None
        query = query.where(_before(_d.c.created_at, _d.c.id, cursor.created_at, cursor.id))
    rows = (
        await conn.execute(query.order_by(_d.c.created_at.desc(), _d.c.id.desc()).limit(limit + 1))
    ).all()
    page = [_delivery(r) for r in rows[:limit]]
    attempts = await attempts_of(conn, [d.id for d in page])
    for delivery in page:
        delivery.attempts = attempts[delivery.id]
    return page, len(rows) > limit


async def attempts_of(
    conn: AsyncConnection, delivery_ids: Sequence[str]
) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = defaultdict(list)
    if not delivery_ids:
        return found
    rows = await conn.execute(
        select(_a).where(_a.c.delivery_id.in_(list(delivery_ids))).order_by(_a.c.id)
    )
    for r in rows:
        found[r.delivery_id].append(
            Attempt(r.attempted_at, r.status_code, r.error, r.duration_ms, r.response_body)
        )
    return found


def _before(created: Any, ident: Any, cursor_created: datetime, cursor_id: str) -> Any:
    """Rows after the cursor in newest-first order."""
    return or_(created < cursor_created, and_(created == cursor_created, ident < cursor_id))
