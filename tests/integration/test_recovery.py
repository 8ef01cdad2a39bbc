"""Crash recovery: a process that dies between the gateway call and phase 2 loses nothing and
never charges twice. The crash is a real one: a child process exits inside the gateway call."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from strongroom.adapters.db import tables as t
from strongroom.adapters.gateways.sandbox import Fault
from strongroom.bootstrap import Container, bootstrap
from strongroom.domain.errors import GatewayUnavailable
from strongroom.domain.model import OperationStatus
from strongroom.entrypoints import worker
from strongroom.service_layer.commands import Caller, CreatePaymentIntent
from strongroom.settings import Settings
from tests.integration.crash_child import EXIT_CODE
from tests.support import FakeClock

ROOT = Path(__file__).resolve().parents[2]


def crash_in_child(database_url: str, merchant_id: str, operation: str, target: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.crash_child",
            database_url,
            merchant_id,
            operation,
            target,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_CODE, result.stderr


async def ledger_sums(container: Container) -> tuple[list[int], dict[str, int]]:
    """Per-transaction sums (all must be 0) and per-account balances."""
    async with container.engines.read.connect() as conn:
        rows = (await conn.execute(select(t.ledger_entries))).all()
    per_tx: dict[str, int] = defaultdict(int)
    per_account: dict[str, int] = defaultdict(int)
    for row in rows:
        per_tx[row.transaction_id] += row.amount
        per_account[row.account] += row.amount
    return list(per_tx.values()), dict(per_account)


async def operation_statuses(container: Container) -> list[str]:
    async with container.engines.read.connect() as conn:
        return list((await conn.execute(select(t.gateway_operations.c.status))).scalars())


async def test_a_payment_interrupted_by_a_crash_is_completed_once_by_the_worker(
    container: Container, settings: Settings, client: httpx.AsyncClient
) -> None:
    merchant = await container.merchants.find_by_name("Acme")
    assert merchant is not None
    await asyncio.to_thread(
        crash_in_child, settings.database_url, merchant.id, "create", "crash-key"
    )

    # The child charged and died: the processor has the charge, our record is mid-flight.
    charges = await container.sandbox.list_charges()
    assert [(c["status"], c["amount_captured"]) for c in charges] == [("captured", 2000)]
    page, _ = await container.payments.list_payment_intents(
        Caller(merchant.id, False), limit=10, starting_after=None
    )
    assert [pi.status for pi in page] == ["processing"]
    assert await operation_statuses(container) == [OperationStatus.STARTED]

    # "After restart": a fresh process (container) whose clock is past the recovery grace.
    later = FakeClock(charges[0]["created_at"] + timedelta(minutes=5))
    restarted = bootstrap(settings, clock=later)
    try:
        result = await worker.run_once(restarted)
        assert result["recovered"] == 1
        again = await worker.run_once(restarted)
        assert again["recovered"] == 0
    finally:
        await restarted.aclose()

    pi = await container.payments.get_payment_intent(Caller(merchant.id, False), page[0].id)
    assert pi.status == "succeeded"
    assert pi.amount_received == 2000
    assert len(await container.sandbox.list_charges()) == 1
    assert await operation_statuses(container) == [OperationStatus.SUCCEEDED]
    sums, balances = await ledger_sums(container)
    assert sums
    assert all(s == 0 for s in sums)
    assert balances["merchant_payable"] == -2000
    assert balances["gateway_receivable"] == 2000
    assert balances.get("gateway_holds", 0) == 0


async def test_a_client_retry_after_the_crash_resumes_instead_of_charging_again(
    container: Container, settings: Settings, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    merchant = await container.merchants.find_by_name("Acme")
    assert merchant is not None
    await asyncio.to_thread(
        crash_in_child, settings.database_url, merchant.id, "create", "retry-key"
    )
    charges = await container.sandbox.list_charges()
    clock.current = charges[0]["created_at"] + timedelta(minutes=2)  # the key's lock expired

    retry = await client.post(
        "/v1/payment_intents",
        json={"amount": 2000, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
        headers={"Idempotency-Key": "retry-key"},
    )

    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "succeeded"
    assert len(await container.sandbox.list_charges()) == 1
    replay = await client.post(
        "/v1/payment_intents",
        json={"amount": 2000, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
        headers={"Idempotency-Key": "retry-key"},
    )
    assert replay.content == retry.content
    assert replay.headers["Idempotent-Replayed"] == "true"


async def test_a_refund_interrupted_by_a_crash_is_completed_once(
    container: Container, settings: Settings, client: httpx.AsyncClient
) -> None:
    paid = await client.post(
        "/v1/payment_intents",
        json={"amount": 2000, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
    )
    merchant = await container.merchants.find_by_name("Acme")
    assert merchant is not None
    await asyncio.to_thread(
        crash_in_child, settings.database_url, merchant.id, "refund", paid.json()["id"]
    )
    refund_charge = await container.sandbox.charge(paid.json()["latest_charge"])
    assert refund_charge is not None
    assert refund_charge["amount_refunded"] == 700

    # The child stamped the operation with the real time; restart five minutes after it.
    later = FakeClock(datetime.now(UTC) + timedelta(minutes=5))
    restarted = bootstrap(settings, clock=later)
    try:
        assert (await worker.run_once(restarted))["recovered"] == 1
    finally:
        await restarted.aclose()

    async with container.engines.read.connect() as conn:
        refunds = (await conn.execute(select(t.refunds.c.status, t.refunds.c.amount))).all()
    assert [tuple(r) for r in refunds] == [("succeeded", 700)]
    after = await container.sandbox.charge(paid.json()["latest_charge"])
    assert after is not None
    assert after["amount_refunded"] == 700
    _, balances = await ledger_sums(container)
    assert balances["merchant_payable"] == -1300


async def test_two_workers_racing_recover_each_operation_once(
    container: Container, settings: Settings, clock: FakeClock
) -> None:
    merchant = await container.merchants.create_merchant("Racer")
    caller = Caller(merchant.id, False)
    container.sandbox.inject(Fault.TIMEOUT_AFTER_CHARGE, times=6)
    for _ in range(6):
        with pytest.raises(GatewayUnavailable):
            await container.payments.create_payment_intent(
                caller,
                CreatePaymentIntent(
                    amount=500, currency="eur", payment_method="tok_visa", confirm=True
                ),
                None,
            )
    later = FakeClock(clock.now() + timedelta(minutes=5))
    workers = [bootstrap(settings, clock=later) for _ in range(2)]
    try:
        results = await asyncio.gather(*(w.payments.recover() for w in workers))
    finally:
        for w in workers:
            await w.aclose()

    assert sum(results) == 6
    assert await operation_statuses(container) == [OperationStatus.SUCCEEDED] * 6
    sums, balances = await ledger_sums(container)
    assert len(sums) == 12  # a hold and a capture per payment, posted once each
    assert balances["merchant_payable"] == -3000
    assert len(await container.sandbox.list_charges()) == 6
