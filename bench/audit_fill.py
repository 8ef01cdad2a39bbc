"""Fill an empty, migrated PostgreSQL database with a signed audit log of N entries, fast, so
`strongroom audit verify` can be timed on a log of realistic size.

    python bench/audit_fill.py N

Uses Strongroom's own code for what must verify (event entries, leaf hashes, the Merkle
frontier, the sealed Ed25519 signing key, tree head signatures) and asyncpg's COPY for the
bulk rows. A tree head is signed every 1,000 entries, as a sequencer under load would. Reads
STRONGROOM_DATABASE_URL and STRONGROOM_KMS_URL like the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

import asyncpg

from strongroom.adapters.db.audit_store import AuditStore
from strongroom.bootstrap import bootstrap
from strongroom.domain import merkle
from strongroom.domain.audit import SYSTEM, AuditEvent, AuditTag, Outcome, tree_head_message
from strongroom.domain.ids import new_id

HEAD_EVERY = 1000
CHUNK = 50_000


async def fill(total: int) -> None:
    container = bootstrap()
    async with container.uow.transaction() as tx:  # the sealed signing key, the normal way
        key_id, key = await container.sequencer.keys.current(AuditStore(tx.repo.conn))
        await tx.commit()
    await container.aclose()
    dsn = container.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    frontier = merkle.Frontier.empty()
    start = container.clock.now() - timedelta(days=1)
    started = time.perf_counter()
    try:
        for first in range(0, total, CHUNK):
            events, leaves, nodes, heads = [], [], [], []
            for n in range(first, min(first + CHUNK, total)):
                event = AuditEvent(
                    id=new_id("aud"),
                    occurred_at=start + timedelta(milliseconds=n),
                    event_type=AuditTag.PAYMENT_INTENT_CREATE,
                    outcome=Outcome.SUCCESS,
                    actor=SYSTEM,
                    merchant_id="acct_bench",
                    resource_type="payment_intent",
                    resource_id=f"pi_{n}",
                    details={"amount": n, "currency": "usd"},
                )
                seq = n + 1
                events.append(_event_record(seq, event))
                leaf = merkle.leaf_hash(event.entry())
                leaves.append((frontier.size, seq, leaf.hex()))
                nodes.extend((lv, ix, h.hex()) for (lv, ix), h in frontier.append(leaf))
                if frontier.size % HEAD_EVERY == 0 or frontier.size == total:
                    stamp = int(event.occurred_at.timestamp() * 1000)
                    root = frontier.root()
                    signature = key.sign(tree_head_message(frontier.size, stamp, root))
                    heads.append((frontier.size, root.hex(), stamp, key_id, signature.hex()))
            async with conn.transaction():
                await conn.copy_records_to_table("audit_events", records=events, columns=_COLUMNS)
                await conn.copy_records_to_table("audit_leaves", records=leaves)
                await conn.copy_records_to_table("audit_nodes", records=nodes)
                await conn.copy_records_to_table("audit_tree_heads", records=heads)
            print(f"  {frontier.size:,} entries written", flush=True)
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), $1)", total
        )
    finally:
        await conn.close()
    print(f"filled {total:,} entries in {time.perf_counter() - started:.1f} s")


_COLUMNS = (
    "seq", "id", "merchant_id", "occurred_at", "actor_type", "actor_id", "event_type",
    "outcome", "ip", "request_id", "resource_type", "resource_id", "subject", "details",
)  # fmt: skip


def _event_record(seq: int, e: AuditEvent) -> tuple[object, ...]:
    return (
        seq, e.id, e.merchant_id, e.occurred_at, str(e.actor.type), e.actor.id,
        str(e.event_type), str(e.outcome), e.origin.ip, e.origin.request_id, e.resource_type,
        e.resource_id, e.subject, json.dumps(e.details),
    )  # fmt: skip


if __name__ == "__main__":
    asyncio.run(fill(int(sys.argv[1])))
