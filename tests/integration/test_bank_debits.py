"""Paying a PaymentIntent from a linked bank account, through the real app (in-process) with the
sandbox provider and rail, on SQLite and PostgreSQL: `processing` for the settlement days (the
clock moved by hand), then `succeeded` with the hold captured, or returned R01 with the hold
reversed and the merchant told by event; unverified accounts refused with nothing written."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.entrypoints.worker import run_once
from tests.support import FakeClock

DAY = 24 * 3600


async def _bank_account(client: httpx.AsyncClient, kind: str) -> str:
    answer = await client.post("/v1/bank_accounts", json={"public_token": f"public-sandbox-{kind}"})
    assert answer.status_code == 200, answer.text
    account_id: str = answer.json()["id"]
    return account_id


async def _debit(client: httpx.AsyncClient, account: str, **extra: Any) -> httpx.Response:
    body = {"amount": 2000, "currency": "usd", "payment_method": account, "confirm": True}
    return await client.post("/v1/payment_intents", json=body | extra)


async def _balances(container: Container) -> dict[str, int]:
    async with container.uow.reading() as repo:
        merchant = (await repo.conn.execute(select(t.merchants.c.id))).scalar_one()
        found = await repo.balances(merchant)
    return {account: amount for (account, _), amount in found.items() if amount}


async def _events(container: Container, pi_id: str) -> list[str]:
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(t.outbox.c.type).where(t.outbox.c.aggregate_id == pi_id).order_by(t.outbox.c.seq)
        )
        return [r.type for r in rows]


async def test_a_verified_account_is_debited_processing_then_succeeded(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    account = await _bank_account(client, "instant")
    answer = await _debit(client, account)
    assert answer.status_code == 200, answer.text
    pi = answer.json()
    assert (pi["status"], pi["payment_method"], pi["amount_received"]) == (
        "processing",
        account,
        0,
    )
    assert await _balances(container) == {"gateway_holds": 2000, "customer_authorizations": -2000}
    clock.advance(seconds=2 * DAY - 1)
    assert (await run_once(container))["bank_settled"] == 0, "not due before its settlement day"
    clock.advance(seconds=1)
    assert (await run_once(container))["bank_settled"] == 1
    shown = (await client.get(f"/v1/payment_intents/{pi['id']}")).json()
    assert (shown["status"], shown["amount_received"]) == ("succeeded", 2000)
    assert await _balances(container) == {"gateway_receivable": 2000, "merchant_payable": -2000}
    assert await _events(container, pi["id"]) == [
        "payment_intent.created",
        "payment_intent.processing",
        "payment_intent.succeeded",
    ]
    assert (await run_once(container))["bank_settled"] == 0, "settled once"


async def test_a_debit_returned_r01_reverses_its_postings_and_tells_the_merchant(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    account = await _bank_account(client, "insufficient-funds")
    pi = (await _debit(client, account)).json()
    assert pi["status"] == "processing"
    clock.advance(days=2)
    await run_once(container)
    shown = (await client.get(f"/v1/payment_intents/{pi['id']}")).json()
    assert shown["status"] == "requires_payment_method"
    error = shown["last_payment_error"]
    assert (error["code"], error["decline_code"]) == ("bank_debit_returned", "insufficient_funds")
    assert "R01" in error["message"]
    assert await _balances(container) == {}, "the hold is reversed: every account back to zero"
    assert await _events(container, pi["id"]) == [
        "payment_intent.created",
        "payment_intent.processing",
        "payment_intent.payment_failed",
    ]
    async with container.uow.reading() as repo:
        debit = (await repo.conn.execute(select(t.bank_debits))).one()
    assert (debit.status, debit.return_code) == ("returned", "R01")


async def test_an_unverified_or_unknown_account_cannot_be_debited_and_nothing_is_written(
    client: httpx.AsyncClient, container: Container
) -> None:
    pending = await _bank_account(client, "manual")
    refused = await _debit(client, pending)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bank_account_unverified"
    unknown = await _debit(client, "ba_nobodys")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "payment_method"
    verified = await _bank_account(client, "instant")
    euros = await _debit(client, verified, currency="eur")
    assert euros.status_code == 400
    async with container.uow.reading() as repo:
        intents = await repo.conn.execute(select(func.count()).select_from(t.payment_intents))
        debits = await repo.conn.execute(select(func.count()).select_from(t.bank_debits))
        assert (intents.scalar_one(), debits.scalar_one()) == (0, 0)


async def test_confirming_later_and_retrying_with_the_same_key_debits_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    account = await _bank_account(client, "instant")
    created = await client.post("/v1/payment_intents", json={"amount": 1500, "currency": "usd"})
    url = f"/v1/payment_intents/{created.json()['id']}/confirm"
    key = {"Idempotency-Key": "confirm-bank-1"}
    answers = [
        await client.post(url, json={"payment_method": account}, headers=key) for _ in range(2)
    ]
    assert [a.json()["status"] for a in answers] == ["processing", "processing"]
    assert answers[1].headers.get("idempotent-replayed") == "true"
    again = await _debit(client, account, amount=700)
    assert again.json()["status"] == "processing"
    async with container.uow.reading() as repo:
        debits = (await repo.conn.execute(select(t.bank_debits.c.amount))).scalars().all()
    assert sorted(debits) == [700, 1500]


async def test_a_bank_debit_is_not_refunded_through_a_card_gateway(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    account = await _bank_account(client, "instant")
    pi = (await _debit(client, account)).json()
    clock.advance(days=2)
    await run_once(container)
    refund = await client.post("/v1/refunds", json={"payment_intent": pi["id"]})
    assert refund.status_code == 400
    assert refund.json()["error"]["code"] == "refund_not_supported"
