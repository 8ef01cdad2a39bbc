"""The background loops: gateway recovery, the audit sequencer and Idempotency-Key pruning. Safe
to run in any number of processes side by side: recovery leases each operation before driving
it, and sequencer passes are serialised by the database."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog

from strongroom.bootstrap import Container
from strongroom.service_layer.maintenance import prune_idempotency_keys

log = structlog.get_logger(__name__)


async def run_once(container: Container) -> dict[str, int]:
    settings = container.settings
    recovered = await container.payments.recover()
    sequenced = await container.sequencer.run_once()
    pruned = await prune_idempotency_keys(
        container.uow,
        container.clock,
        timedelta(hours=settings.idempotency_retention_hours),
    )
    return {"recovered": recovered, "sequenced": sequenced, "pruned": pruned}


async def run_forever(container: Container, stop: asyncio.Event) -> None:
    interval = container.settings.worker_interval_seconds
    while not stop.is_set():
        try:
            await run_once(container)
        except Exception:  # a bad pass must not kill the loop; the next pass retries
            log.exception("worker pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
