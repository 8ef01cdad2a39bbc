"""The outbox relay: publishes committed events to the event stream, in outbox order, at least
once. One relay runs at a time across all workers (a lease in the database); if its holder dies,
another takes over when the lease expires and publishes again whatever was not marked
published. Consumers skip events they have applied, so a second publication is harmless."""

from __future__ import annotations

import secrets
from datetime import timedelta

from strongroom.adapters.db import outbox_store
from strongroom.adapters.events.port import EventBus
from strongroom.domain.clock import Clock
from strongroom.service_layer.unit_of_work import UnitOfWork

RELAY_LEASE = "outbox-relay"


class Relay:
    def __init__(
        self,
        uow: UnitOfWork,
        bus: EventBus,
        clock: Clock,
        *,
        batch_size: int = 500,
        lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self.uow = uow
        self.bus = bus
        self.clock = clock
        self.batch_size = batch_size
        self.lease = lease
        self.holder = f"relay-{secrets.token_hex(8)}"  # this process's claim on the lease

    async def run_once(self) -> int:
        """Publish until the outbox is drained or the lease is another's; returns how many
        events were published."""
        published = 0
        while True:
            now = self.clock.now()
            async with self.uow.transaction() as tx:
                held = await outbox_store.take_lease(
                    tx.repo.conn, RELAY_LEASE, self.holder, now, now + self.lease
                )
                await tx.commit()
            if not held:
                return published
            # Read and publish outside any transaction: a slow stream must not hold a lock
            # that payments wait on (and in memory the consumers write in their own).
            async with self.uow.reading() as repo:
                events = await outbox_store.unpublished(repo.conn, self.batch_size)
            if not events:
                return published
            await self.bus.publish(events)
            async with self.uow.transaction() as tx:
                await outbox_store.mark_published(
                    tx.repo.conn, [e.seq for e in events], self.clock.now()
                )
                await tx.commit()
            published += len(events)
            if len(events) < self.batch_size:
                return published

    async def release(self) -> None:
        """Give the lease up (on graceful shutdown), so another worker takes over at once."""
        async with self.uow.transaction() as tx:
            await outbox_store.release_lease(tx.repo.conn, RELAY_LEASE, self.holder)
            await tx.commit()


async def prune_outbox(uow: UnitOfWork, clock: Clock, retention: timedelta) -> int:
    """Delete events published longer ago than `retention`."""
    async with uow.transaction() as tx:
        pruned = await outbox_store.prune(tx.repo.conn, clock.now() - retention)
        await tx.commit()
    return pruned
