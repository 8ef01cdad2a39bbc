"""Housekeeping the worker runs: pruning Idempotency-Keys past their retention."""

from __future__ import annotations

from datetime import timedelta

from strongroom.domain.clock import Clock
from strongroom.service_layer.unit_of_work import UnitOfWork


async def prune_idempotency_keys(uow: UnitOfWork, clock: Clock, retention: timedelta) -> int:
    """Delete keys older than `retention` (never less than 24 hours, by settings)."""
    async with uow.transaction() as tx:
        pruned = await tx.repo.prune_idempotency_keys(clock.now() - retention)
        await tx.commit()
    return pruned
