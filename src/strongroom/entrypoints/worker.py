"""The background loops: the outbox relay, event consumers, gateway recovery, the audit sequencer
and pruning. Safe to run in any number of processes side by side: the relay runs under a lease,
consumers share durable stream consumers, recovery leases each operation before driving it, and
sequencer passes are serialised by the database. Nothing is lost to SIGKILL: every job's state is
in the database or the stream, and an unfinished one is picked up again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog

from strongroom.bootstrap import Container
from strongroom.service_layer.maintenance import prune_idempotency_keys
from strongroom.service_layer.outbox import prune_outbox

log = structlog.get_logger(__name__)


async def run_once(container: Container) -> dict[str, int]:
    """One pass of every loop, each on its own: one that fails (logged) does not hold up the
    others, so a gateway outage never stops the audit log being sealed. Returns how much each
    loop that succeeded did."""
    settings = container.settings
    loops: dict[str, Callable[[], Awaitable[int]]] = {
        "published": container.relay.run_once,
        "consumed": lambda: container.bus.pump(settings.worker_batch_size),
        "recovered": container.payments.recover,
        "sequenced": container.sequencer.run_once,
        "delivered": lambda: container.webhooks.deliver_due(settings.worker_batch_size),
        "inbound": lambda: container.inbound.process_due(settings.worker_batch_size),
        "bank_settled": lambda: container.bank_debits.settle_due(batch=settings.worker_batch_size),
        "bank_deposits": lambda: container.bank_accounts.send_unsent_deposits(
            batch=settings.worker_batch_size
        ),
        "bank_expired": lambda: container.bank_accounts.expire_due(
            batch=settings.worker_batch_size
        ),
        "pruned": lambda: prune_idempotency_keys(
            container.uow,
            container.clock,
            timedelta(hours=settings.idempotency_retention_hours),
        ),
        "pruned_events": lambda: prune_outbox(
            container.uow, container.clock, timedelta(hours=settings.outbox_retention_hours)
        ),
    }
    done: dict[str, int] = {}
    tracing = container.tracing
    with tracing.span("worker pass"):
        for name, loop in loops.items():
            try:
                with tracing.span(f"worker {name}", {"strongroom.worker.loop": name}) as span:
                    done[name] = await loop()
                    span.set_attribute("strongroom.worker.done", done[name])
            except Exception:
                log.exception("worker loop failed", loop=name)
    return done


async def run_forever(container: Container, stop: asyncio.Event) -> None:
    """Run passes until `stop` is set (SIGTERM): the pass under way finishes, then the relay's
    lease is given up so another worker takes over at once."""
    interval = container.settings.worker_interval_seconds
    await container.start()
    while not stop.is_set():
        await run_once(container)  # logs its own failures; the next pass retries
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    with contextlib.suppress(Exception):  # a lease left behind only expires later
        await container.relay.release()
