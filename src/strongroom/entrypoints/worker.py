"""The background loops: gateway recovery, the audit sequencer and Idempotency-Key pruning. Safe
to run in any number of processes side by side: recovery leases each operation before driving
it, and sequencer passes are serialised by the database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog

from strongroom.bootstrap import Container
from strongroom.service_layer.maintenance import prune_idempotency_keys

log = structlog.get_logger(__name__)


async def run_once(container: Container) -> dict[str, int]:
    """One pass of every loop, each on its own: one that fails (logged) does not hold up the
    others, so a gateway outage never stops the audit log being sealed. Returns how much each
    loop that succeeded did."""
    settings = container.settings
    loops: dict[str, Callable[[], Awaitable[int]]] = {
        "recovered": container.payments.recover,
        "sequenced": container.sequencer.run_once,
        "pruned": lambda: prune_idempotency_keys(
            container.uow,
            container.clock,
            timedelta(hours=settings.idempotency_retention_hours),
        ),
    }
    done: dict[str, int] = {}
    for name, loop in loops.items():
        try:
            done[name] = await loop()
        except Exception:
            log.exception("worker loop failed", loop=name)
    return done


async def run_forever(container: Container, stop: asyncio.Event) -> None:
    interval = container.settings.worker_interval_seconds
    while not stop.is_set():
        await run_once(container)  # logs its own failures; the next pass retries
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
