"""Linking and verifying bank accounts through the real app (in-process) with the sandbox bank
provider, on SQLite and PostgreSQL: instant verification, micro-deposits (right, wrong three
times, expired on day ten with the clock moved by hand), what is stored sealed, and the events
and audit entries each transition leaves."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import select

from strongroom.adapters.banks.sandbox import INSUFFICIENT_FUNDS_ACCOUNT, KINDS, ROUTING
from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Binding
from strongroom.bootstrap import Container
from strongroom.domain.bank_accounts import VERIFY_WITHIN
from strongroom.entrypoints.worker import run_once
from strongroom.service_layer.bank_accounts import WRONG_AMOUNTS
from tests.support import FakeClock


async def _link(client: httpx.AsyncClient, kind: str, **extra: Any) -> dict[str, Any]:
    answer = await client.post(
        "/v1/bank_accounts", json={"public_token": f"public-sandbox-{kind}", **extra}
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _sent(container: Container, account_id: str) -> list[int]:
    """The micro-deposits, as the customer reads them on their statement."""
    return list(container.bank_rail.sent[account_id])  # type: ignore[attr-defined]


async def _events(container: Container, account_id: str) -> list[str]:
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(t.outbox.c.type)
            .where(t.outbox.c.aggregate_id == account_id)
            .order_by(t.outbox.c.seq)
        )
        return [r.type for r in rows]


async def _audit_tags(container: Container, account_id: str) -> list[tuple[str, str]]:
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(t.audit_events.c.event_type, t.audit_events.c.outcome)
            .where(t.audit_events.c.resource_id == account_id)
            .order_by(t.audit_events.c.seq)
        )
        return [(r.event_type, r.outcome) for r in rows]


async def test_an_instantly_verified_account_shows_only_its_last_four(
    client: httpx.AsyncClient, container: Container
) -> None:
    account = await _link(client, "instant")
    number = KINDS["instant"][0]
    assert account["object"] == "bank_account"
    assert (account["status"], account["verification_status"]) == (
        "verified",
        "automatically_verified",
    )
    assert account["last4"] == number[-4:]
    assert account["institution"]
    assert account["account_type"] == "checking"
    for shown in (account, (await client.get(f"/v1/bank_accounts/{account['id']}")).json()):
        text = str(shown)
        assert number not in text
        assert ROUTING not in text
        assert "access-sandbox" not in text
    listed = (await client.get("/v1/bank_accounts")).json()
    assert [a["id"] for a in listed["data"]] == [account["id"]]
    assert await _events(container, account["id"]) == [
        "bank_account.created",
        "bank_account.verified",
    ]
    assert await _audit_tags(container, account["id"]) == [("api:bank_account:link", "success")]


async def test_secrets_are_stored_sealed_and_open_for_their_own_row(
    client: httpx.AsyncClient, container: Container
) -> None:
    account = await _link(client, "manual")
    async with container.uow.reading() as repo:
        row = (
            await repo.conn.execute(
                select(t.bank_accounts).where(t.bank_accounts.c.id == account["id"])
            )
        ).one()
        item = (
            await repo.conn.execute(select(t.bank_items).where(t.bank_items.c.id == row.item_id))
        ).one()
        raw = [
            *(await repo.conn.exec_driver_sql("SELECT * FROM bank_accounts")).all(),
            *(await repo.conn.exec_driver_sql("SELECT * FROM bank_items")).all(),
        ]
    dump = repr(raw)
    assert KINDS["manual"][0] not in dump
    assert ROUTING not in dump
    assert "access-sandbox" not in dump
    for amount in _sent(container, account["id"]):
        assert f"[{amount}," not in dump
    token = await container.envelope.open(
        item.access_token,
        Binding.for_row(t.bank_items, "access_token", item.id, row.merchant_id),
    )
    assert token.startswith(b"access-sandbox-manual-")


async def test_micro_deposits_verify_with_the_right_amounts_in_either_order(
    client: httpx.AsyncClient, container: Container
) -> None:
    account = await _link(client, "manual")
    assert (account["status"], account["verification_status"]) == (
        "pending",
        "pending_manual_verification",
    )
    first, second = _sent(container, account["id"])
    verified = await client.post(
        f"/v1/bank_accounts/{account['id']}/verify", json={"amounts": [second, first]}
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["verification_status"] == "manually_verified"
    assert await _events(container, account["id"]) == [
        "bank_account.created",
        "bank_account.verified",
    ]
    tags = await _audit_tags(container, account["id"])
    assert tags[-1] == ("api:bank_account:verify", "success")


async def test_three_wrong_answers_fail_it_and_the_right_one_after_is_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    account = await _link(client, "manual")
    sent = _sent(container, account["id"])
    first, second = sent
    other = [a for a in range(1, 100) if a not in sent][:2]
    # The first amount wrong, then the second, then both.
    wrongs = [[other[0], second], [first, other[0]], other]
    url = f"/v1/bank_accounts/{account['id']}/verify"
    answers = [await client.post(url, json={"amounts": w}) for w in wrongs]
    assert [a.status_code for a in answers] == [400, 400, 400]
    messages = [a.json()["error"]["message"] for a in answers]
    assert "2 attempts left" in messages[0]
    assert "1 attempt left" in messages[1]
    assert "last attempt" in messages[2]
    # Never which amount was wrong: apart from the attempts left, the answers are the same.
    said = {re.sub(r"\d+ attempts? left\.|That was the last attempt.*", "", m) for m in messages}
    assert said == {WRONG_AMOUNTS + " "}
    assert {a.json()["error"]["code"] for a in answers} == {"bank_account_verification_failed"}
    right = await client.post(url, json={"amounts": sent})
    assert right.status_code == 409
    assert right.json()["error"]["code"] == "bank_account_verification_failed"
    shown = (await client.get(f"/v1/bank_accounts/{account['id']}")).json()
    assert (shown["status"], shown["verification_attempts_remaining"]) == ("failed", 0)
    assert await _events(container, account["id"]) == [
        "bank_account.created",
        "bank_account.verification_failed",
    ]
    outcomes = [o for tag, o in await _audit_tags(container, account["id"]) if "verify" in tag]
    assert outcomes == ["failure", "failure", "failure"]


async def test_day_ten_without_success_expires_it(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    account = await _link(client, "manual")
    sent = _sent(container, account["id"])
    clock.advance(seconds=VERIFY_WITHIN.total_seconds() - 1)
    assert await container.bank_accounts.expire_due() == 0
    clock.advance(seconds=1)
    shown = (await client.get(f"/v1/bank_accounts/{account['id']}")).json()
    assert shown["status"] == "expired", "reads show it expired before the sweep stores it"
    assert (await run_once(container))["bank_expired"] == 1, "the worker's sweep stores it"
    assert await container.bank_accounts.expire_due() == 0
    right = await client.post(f"/v1/bank_accounts/{account['id']}/verify", json={"amounts": sent})
    assert right.status_code == 409
    assert await _events(container, account["id"]) == [
        "bank_account.created",
        "bank_account.verification_expired",
    ]
    assert ("system:bank_account:verification", "success") in await _audit_tags(
        container, account["id"]
    )


async def test_the_right_amounts_on_day_nine_verify_and_debits_become_possible(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    account = await _link(client, "manual")
    debit = {"amount": 500, "currency": "usd", "payment_method": account["id"], "confirm": True}
    refused = await client.post("/v1/payment_intents", json=debit)
    assert refused.json()["error"]["code"] == "bank_account_unverified"
    clock.advance(days=9)
    answer = await client.post(
        f"/v1/bank_accounts/{account['id']}/verify",
        json={"amounts": _sent(container, account["id"])},
    )
    assert answer.json()["status"] == "verified"
    paid = await client.post("/v1/payment_intents", json=debit)
    assert paid.json()["status"] == "processing"
    clock.advance(days=5)
    assert await container.bank_accounts.expire_due() == 0
    assert (await client.get(f"/v1/bank_accounts/{account['id']}")).json()["status"] == "verified"


async def test_bad_input_is_a_clear_400_and_writes_nothing(
    client: httpx.AsyncClient, container: Container
) -> None:
    refused = await client.post("/v1/bank_accounts", json={"public_token": "public-nonsense"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bank_provider_invalid_public_token"
    missing = await client.post(
        "/v1/bank_accounts", json={"public_token": "public-sandbox-instant", "customer": "cus_x"}
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "customer"
    account = await _link(client, "manual")
    for amounts in ([1], [0, 5], [5, 100], [1, 2, 3], ["a", 2]):
        answer = await client.post(
            f"/v1/bank_accounts/{account['id']}/verify", json={"amounts": amounts}
        )
        assert answer.status_code == 400, (amounts, answer.text)
    shown = (await client.get(f"/v1/bank_accounts/{account['id']}")).json()
    assert shown["verification_attempts_remaining"] == 3, "malformed answers cost no attempt"
    async with container.uow.reading() as repo:
        items = (await repo.conn.execute(select(t.bank_items))).all()
    assert len(items) == 1, "only the one good link was stored"


async def test_the_same_bank_login_cannot_be_linked_twice(client: httpx.AsyncClient) -> None:
    await _link(client, "instant-2")
    again = await client.post(
        "/v1/bank_accounts", json={"public_token": "public-sandbox-instant-2"}
    )
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "bank_account_exists"


async def test_an_insufficient_funds_account_links_verified(client: httpx.AsyncClient) -> None:
    account = await _link(client, "insufficient-funds")
    assert account["status"] == "verified"
    assert account["last4"] == INSUFFICIENT_FUNDS_ACCOUNT[-4:]


class _DownRail:
    async def send_micro_deposits(self, **_: object) -> None:
        raise ConnectionError("the rail is down")


async def test_micro_deposits_a_crash_left_unsent_are_sent_by_the_worker(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    rail = container.bank_accounts.rail
    container.bank_accounts.rail = _DownRail()  # type: ignore[assignment]
    try:
        account = await _link(client, "manual")  # linked all the same
    finally:
        container.bank_accounts.rail = rail
    assert account["id"] not in container.bank_rail.sent  # type: ignore[attr-defined]
    assert (await run_once(container))["bank_deposits"] == 0, "the request may still send them"
    clock.advance(minutes=2)
    assert (await run_once(container))["bank_deposits"] == 1
    assert (await run_once(container))["bank_deposits"] == 0, "sent once"
    answer = await client.post(
        f"/v1/bank_accounts/{account['id']}/verify",
        json={"amounts": _sent(container, account["id"])},
    )
    assert answer.json()["status"] == "verified"
