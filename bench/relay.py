"""Outbox relay drain rate against the sustained payment-create rate, in one run.

    python bench/relay.py    (bench/run.sh runs it; needs PostgreSQL and NATS JetStream)

1. A throwaway PostgreSQL database: BENCH_RELAY_CLIENTS concurrent clients create-and-confirm
   payments through the service layer for BENCH_RELAY_SECONDS with no relay running, so every
   event waits in the outbox. That is the sustained create rate (payments/s); the server path adds
   HTTP on top, so the real rate is lower and the ratio below is conservative.
2. The relay then drains that backlog into a throwaway JetStream stream (every event acked by the
   server). Drain rate, in payments/s = events/s ÷ events per payment.
3. Prints both, the ratio and PASS/MISS against the target (≥ 2), and one BENCH_RELAY JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import asyncpg

from strongroom.adapters.db import outbox_store
from strongroom.adapters.db.migrate import upgrade
from strongroom.bootstrap import Container, bootstrap
from strongroom.service_layer import commands as c
from strongroom.settings import Settings

TARGET = 2.0
PG = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432")
NATS = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
SECONDS = float(os.environ.get("BENCH_RELAY_SECONDS", "10"))
CLIENTS = int(os.environ.get("BENCH_RELAY_CLIENTS", "16"))


async def create_for(container: Container, caller: c.Caller, until: float) -> int:
    made = 0
    while time.perf_counter() < until:
        await container.payments.create_payment_intent(
            caller,
            c.CreatePaymentIntent(
                amount=1000 + made, currency="usd", payment_method="tok_visa", confirm=True
            ),
            None,
        )
        made += 1
    return made


async def measure(container: Container) -> dict[str, float]:
    merchant = await container.merchants.create_merchant("Relay bench")
    caller = c.Caller(merchant_id=merchant.id, livemode=False)
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(create_for(container, caller, started + SECONDS) for _ in range(CLIENTS))
    )
    create_seconds = time.perf_counter() - started
    payments = sum(counts)
    async with container.uow.reading() as repo:
        backlog, _ = await outbox_store.backlog(repo.conn)

    await container.start()
    started = time.perf_counter()
    drained = await container.relay.run_once()
    drain_seconds = time.perf_counter() - started
    events_per_payment = backlog / payments
    create_rate = payments / create_seconds
    drain_rate = drained / drain_seconds / events_per_payment
    return {
        "payments": payments,
        "events": drained,
        "create_payments_per_s": create_rate,
        "drain_events_per_s": drained / drain_seconds,
        "drain_payments_per_s": drain_rate,
        "ratio": drain_rate / create_rate,
    }


async def main() -> int:
    name = f"strongroom_relay_{uuid.uuid4().hex[:10]}"
    stream = f"BENCH_{uuid.uuid4().hex[:10].upper()}"
    admin = await asyncpg.connect(f"{PG}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{PG.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
        await asyncio.to_thread(upgrade, url)
        with TemporaryDirectory() as keys:
            settings = Settings(
                database_url=url,
                events_url=f"{NATS}?stream={stream}",
                kms_url=f"local:///{Path(keys) / 'keyring'}",
                audit_payment_events=False,
                db_pool_size=CLIENTS,
                env="development",
            )
            container = bootstrap(settings)
            container.bus.handlers.clear()  # the relay alone: consumers are measured elsewhere
            try:
                result = await measure(container)
            finally:
                await drop_stream(container, stream)
                await container.aclose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    verdict = "PASS" if result["ratio"] >= TARGET else "MISS"
    print(f"payments created:     {result['payments']:.0f} in {SECONDS:.0f} s, no relay running")
    print(f"create rate:          {result['create_payments_per_s']:8.1f} payments/s")
    print(
        f"relay drain rate:     {result['drain_payments_per_s']:8.1f} payments/s "
        f"({result['drain_events_per_s']:.0f} events/s into JetStream)"
    )
    print(f"drain ÷ create:       {result['ratio']:8.2f}   target ≥ {TARGET:.0f}   {verdict}")
    print("BENCH_RELAY " + json.dumps(result))
    return 0


async def drop_stream(container: Container, stream: str) -> None:
    import nats

    nc = await nats.connect(NATS)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception as exc:  # best effort: a leftover stream is only clutter
        print(f"bench: could not delete stream {stream}: {exc}", file=sys.stderr)
    finally:
        await nc.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
