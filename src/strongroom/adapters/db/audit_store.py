"""Reads and appends for the audit log's tables, over one SQLAlchemy connection.

Nothing here updates or deletes: the log only grows (on PostgreSQL a trigger enforces it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.db import tables as t
from strongroom.domain.audit import Actor, ActorType, AuditEvent, AuditTag, Origin, Outcome
from strongroom.domain.merkle import Node

_ev = t.audit_events
_lv = t.audit_leaves
_nd = t.audit_nodes
_th = t.audit_tree_heads
_INSERT_EVENT = _ev.insert()


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: str
    signature: bytes


@dataclass(frozen=True)
class LoggedEvent:
    """An event with its place in the tree; `leaf_index` is None until the sequencer runs."""

    seq: int
    event: AuditEvent
    leaf_index: int | None
    leaf_hash: bytes | None


def event_values(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "merchant_id": event.merchant_id,
        "livemode": event.livemode,
        "occurred_at": event.occurred_at,
        "actor_type": str(event.actor.type),
        "actor_id": event.actor.id,
        "event_type": str(event.event_type),
        "outcome": str(event.outcome),
        "ip": event.origin.ip,
        "request_id": event.origin.request_id,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "subject": event.subject,
        "details": event.details,
    }


async def add_event(conn: AsyncConnection, event: AuditEvent) -> None:
    await conn.execute(_INSERT_EVENT, event_values(event))


def event_from_row(row: Row[Any]) -> AuditEvent:
    m = row._mapping
    return AuditEvent(
        id=m["id"],
        occurred_at=m["occurred_at"],
        event_type=AuditTag(m["event_type"]),
        outcome=Outcome(m["outcome"]),
        actor=Actor(ActorType(m["actor_type"]), m["actor_id"]),
        merchant_id=m["merchant_id"],
        livemode=m["livemode"],
        origin=Origin(m["ip"], m["request_id"]),
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        subject=m["subject"],
        details=m["details"],
    )


def _head_from_row(row: Row[Any]) -> TreeHead:
    return TreeHead(
        tree_size=row.tree_size,
        root_hash=bytes.fromhex(row.root_hash),
        timestamp_ms=row.timestamp_ms,
        key_id=row.key_id,
        signature=bytes.fromhex(row.signature),
    )


def _logged(row: Row[Any]) -> LoggedEvent:
    leaf_hash = row._mapping["leaf_hash"]
    return LoggedEvent(
        seq=row._mapping["seq"],
        event=event_from_row(row),
        leaf_index=row._mapping["leaf_index"],
        leaf_hash=bytes.fromhex(leaf_hash) if leaf_hash is not None else None,
    )


_EVENTS_AND_LEAVES = _ev.outerjoin(_lv, _lv.c.event_seq == _ev.c.seq)  # leaf columns None: pending
_WITH_LEAF = select(_ev, _lv.c.leaf_index, _lv.c.leaf_hash).select_from(_EVENTS_AND_LEAVES)


class AuditStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # --- events ---------------------------------------------------------------------------------
    async def event(self, merchant_id: str, livemode: bool, event_id: str) -> LoggedEvent | None:
        """One of a merchant's events in one mode, or an installation-wide one (key rotation,
        say: every merchant may see those proven); another merchant's is None, as missing."""
        query = _WITH_LEAF.where(
            _ev.c.id == event_id,
            or_(
                and_(_ev.c.merchant_id == merchant_id, _ev.c.livemode == livemode),
                _ev.c.merchant_id.is_(None),
            ),
        )
        row = (await self.conn.execute(query)).first()
        return _logged(row) if row is not None else None

    async def events(
        self, merchant_id: str, livemode: bool, *, limit: int, before_seq: int | None
    ) -> list[LoggedEvent]:
        """One merchant's events in one mode, newest first."""
        query = _WITH_LEAF.where(_ev.c.merchant_id == merchant_id, _ev.c.livemode == livemode)
        if before_seq is not None:
            query = query.where(_ev.c.seq < before_seq)
        rows = await self.conn.execute(query.order_by(_ev.c.seq.desc()).limit(limit))
        return [_logged(r) for r in rows]

    async def pending(self, *, after_seq: int, limit: int) -> list[tuple[int, AuditEvent]]:
        """Committed events not yet in the tree, oldest first, among those after `after_seq`."""
        rows = await self.conn.execute(
            select(_ev)
            .select_from(_EVENTS_AND_LEAVES)
            .where(_lv.c.leaf_index.is_(None), _ev.c.seq > after_seq)
            .order_by(_ev.c.seq)
            .limit(limit)
        )
        return [(r.seq, event_from_row(r)) for r in rows]

    async def pending_before(
        self, moment: datetime, *, below_seq: int, limit: int
    ) -> list[AuditEvent]:
        """Events outside the tree that occurred before `moment` and sit below `below_seq`."""
        rows = await self.conn.execute(
            select(_ev)
            .select_from(_EVENTS_AND_LEAVES)
            .where(_lv.c.leaf_index.is_(None), _ev.c.occurred_at < moment, _ev.c.seq < below_seq)
            .order_by(_ev.c.seq)
            .limit(limit)
        )
        return [event_from_row(r) for r in rows]

    async def count_pending(self) -> int:
        query = (
            select(func.count()).select_from(_EVENTS_AND_LEAVES).where(_lv.c.leaf_index.is_(None))
        )
        return int((await self.conn.execute(query)).scalar() or 0)

    async def max_integrated_seq(self) -> int:
        return int((await self.conn.execute(select(func.max(_lv.c.event_seq)))).scalar() or 0)

    # --- the tree -------------------------------------------------------------------------------
    async def add_leaves(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(_lv.insert(), rows)

    async def add_nodes(self, nodes: Iterable[tuple[Node, bytes]]) -> None:
        rows = [{"level": lv, "idx": ix, "hash": h.hex()} for (lv, ix), h in nodes]
        if rows:
            await self.conn.execute(_nd.insert(), rows)

    async def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        """Complete-subtree hashes by (level, index); level 0 are the leaves."""
        wanted = set(wanted)
        leaves = [ix for lv, ix in wanted if lv == 0]
        inner = [(lv, ix) for lv, ix in wanted if lv > 0]
        found: dict[Node, bytes] = {}
        if leaves:
            rows = await self.conn.execute(
                select(_lv.c.leaf_index, _lv.c.leaf_hash).where(_lv.c.leaf_index.in_(leaves))
            )
            found.update(((0, r.leaf_index), bytes.fromhex(r.leaf_hash)) for r in rows)
        if inner:
            rows = await self.conn.execute(
                select(_nd).where(tuple_(_nd.c.level, _nd.c.idx).in_(inner))
            )
            found.update(((r.level, r.idx), bytes.fromhex(r.hash)) for r in rows)
        return found

    async def leaves_with_events(self, *, batch: int = 5000) -> AsyncIterator[Row[Any]]:
        """Every leaf in order, joined to its event (event columns are None when the event row
        is missing). Streamed in keyset batches, so memory stays flat however big the log."""
        query = (
            select(_lv.c.leaf_index, _lv.c.leaf_hash, _lv.c.event_seq, _ev)
            .select_from(_lv.outerjoin(_ev, _ev.c.seq == _lv.c.event_seq))
            .where(_lv.c.leaf_index >= bindparam("start"))
            .order_by(_lv.c.leaf_index)
            .limit(batch)
        )
        start = 0
        while True:
            rows = (await self.conn.execute(query, {"start": start})).all()
            for row in rows:
                yield row
            if len(rows) < batch:
                return
            start = rows[-1].leaf_index + 1

    async def level_hashes(
        self, level: int, *, batch: int = 10_000
    ) -> AsyncIterator[tuple[int, bytes]]:
        """(index, hash) of every stored node of `level` in index order (level 0: the leaves),
        in keyset batches."""
        if level == 0:
            query = (
                select(_lv.c.leaf_index.label("idx"), _lv.c.leaf_hash.label("hash"))
                .where(_lv.c.leaf_index >= bindparam("start"))
                .order_by(_lv.c.leaf_index)
                .limit(batch)
            )
        else:
            query = (
                select(_nd.c.idx, _nd.c.hash)
                .where(_nd.c.level == level, _nd.c.idx >= bindparam("start"))
                .order_by(_nd.c.idx)
                .limit(batch)
            )
        start = 0
        while True:
            rows = (await self.conn.execute(query, {"start": start})).all()
            for row in rows:
                yield row.idx, bytes.fromhex(row.hash)
            if len(rows) < batch:
                return
            start = rows[-1].idx + 1

    # --- tree heads -----------------------------------------------------------------------------
    async def latest_head(self, *, for_update: bool = False) -> TreeHead | None:
        query = select(_th).order_by(_th.c.tree_size.desc()).limit(1)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return _head_from_row(row) if row is not None else None

    async def head(self, tree_size: int | None) -> TreeHead | None:
        """The head of exactly `tree_size`, or the latest when it is None."""
        if tree_size is None:
            return await self.latest_head()
        row = (await self.conn.execute(select(_th).where(_th.c.tree_size == tree_size))).first()
        return _head_from_row(row) if row is not None else None

    async def heads(self) -> list[TreeHead]:
        rows = await self.conn.execute(select(_th).order_by(_th.c.tree_size))
        return [_head_from_row(r) for r in rows]

    async def add_head(self, head: TreeHead) -> None:
        await self.conn.execute(
            _th.insert().values(
                tree_size=head.tree_size,
                root_hash=head.root_hash.hex(),
                timestamp_ms=head.timestamp_ms,
                key_id=head.key_id,
                signature=head.signature.hex(),
            )
        )

    # --- signing keys ---------------------------------------------------------------------------
    async def signing_keys(self) -> list[Row[Any]]:
        rows = await self.conn.execute(
            select(t.audit_signing_keys).order_by(t.audit_signing_keys.c.created_at)
        )
        return list(rows)

    async def public_key(self, key_id: str) -> str:
        keys = t.audit_signing_keys
        query = select(keys.c.public_key).where(keys.c.id == key_id)
        return str((await self.conn.execute(query)).scalar_one())

    async def add_signing_key(self, values: dict[str, Any]) -> None:
        await self.conn.execute(t.audit_signing_keys.insert().values(**values))
