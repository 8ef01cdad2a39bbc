"""Bank accounts through Plaid, end to end in-process: the real app with STRONGROOM_BANK_PROVIDER
=plaid, whose official SDK talks over HTTP to the Plaid stand-in each test starts
(tests/standins/plaid_server.py). Plaid's webhooks are signed by the stand-in's ES256 key,
which it serves at /webhook_verification_key/get as Plaid does; the clock is moved by hand.

Covers: a valid webhook applied once however often it is delivered; forged, stale and
wrongly-signed ones refused (400), audited and never applied; and `bank rotate-tokens`
interrupted half-way then run again, after which every item's stored token still works."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Binding
from strongroom.bootstrap import Container, bootstrap
from strongroom.entrypoints.api.app import create_app
from strongroom.entrypoints.worker import run_once
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings
from tests.standins.plaid_server import PlaidStandIn, instant_checking, pending_automatic
from tests.support import FakeClock

CLIENT_ID = "5f2c0ffee0ddba11c0ffee00"
SECRET = "0123456789abcdef0123456789abcd"


@pytest.fixture
def standin() -> Iterator[PlaidStandIn]:
    with PlaidStandIn(client_id=CLIENT_ID, secret=SECRET) as server:
        yield server


@pytest.fixture
async def plaid(
    settings: Settings, clock: FakeClock, standin: PlaidStandIn
) -> AsyncIterator[Container]:
    built = bootstrap(
        settings.model_copy(
            update={
                "bank_provider": "plaid",
                "plaid_client_id": CLIENT_ID,
                "plaid_secret": SecretStr(SECRET),
                "plaid_url": standin.url,
            }
        ),
        clock=clock,
    )
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def api(plaid: Container) -> AsyncIterator[httpx.AsyncClient]:
    merchant = await plaid.merchants.create_merchant("Acme")
    key = await plaid.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(plaid)),
        base_url="http://strongroom.test",
        headers={"Authorization": f"Bearer {key.secret}"},
    ) as client:
        yield client


async def _link(api: httpx.AsyncClient, public_token: str) -> dict[str, Any]:
    answer = await api.post("/v1/bank_accounts", json={"public_token": public_token})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _webhook(standin: PlaidStandIn, code: str, account: str) -> bytes:
    item_id = next(iter(standin.items))
    doc = {
        "webhook_type": "AUTH",
        "webhook_code": code,
        "item_id": item_id,
        "account_id": account,
        "environment": "sandbox",
    }
    return json.dumps(doc).encode()


async def _deliver(api: httpx.AsyncClient, body: bytes, header: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Plaid-Verification"] = header
    return await api.post("/v1/webhooks/plaid", content=body, headers=headers)


async def _events(container: Container, account_id: str) -> list[str]:
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(t.outbox.c.type)
            .where(t.outbox.c.aggregate_id == account_id)
            .order_by(t.outbox.c.seq)
        )
        return [r.type for r in rows]


async def test_instant_auth_through_plaid_verifies_on_linking(
    api: httpx.AsyncClient, standin: PlaidStandIn
) -> None:
    account = await _link(api, standin.public_token(accounts=[instant_checking()]))
    assert (account["status"], account["last4"]) == ("verified", "0000")
    assert "1111222233330000" not in json.dumps(account)
    assert len(standin.to("/item/public_token/exchange")) == 1


async def test_a_valid_webhook_delivered_five_times_is_applied_once(
    api: httpx.AsyncClient, plaid: Container, standin: PlaidStandIn, clock: FakeClock
) -> None:
    pending = pending_automatic()
    account = await _link(api, standin.public_token(accounts=[pending]))
    assert account["verification_status"] == "pending_automatic_verification"
    body = _webhook(standin, "AUTOMATICALLY_VERIFIED", pending.account_id)
    answers = []
    for _ in range(5):
        header = standin.sign_webhook(body, iat=int(clock.now().timestamp()))
        answers.append(await _deliver(api, body, header))
    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True, True]
    await run_once(plaid)
    shown = (await api.get(f"/v1/bank_accounts/{account['id']}")).json()
    assert shown["verification_status"] == "automatically_verified"
    # Late, and out of order: an expiry after the verification changes nothing.
    late = _webhook(standin, "VERIFICATION_EXPIRED", pending.account_id)
    header = standin.sign_webhook(late, iat=int(clock.now().timestamp()))
    assert (await _deliver(api, late, header)).status_code == 200
    await run_once(plaid)
    assert (await api.get(f"/v1/bank_accounts/{account['id']}")).json()["status"] == "verified"
    assert await _events(plaid, account["id"]) == [
        "bank_account.created",
        "bank_account.verified",
    ]
    assert len(standin.to("/webhook_verification_key/get")) == 1, "the key is cached"


async def test_forged_stale_and_wrongly_signed_webhooks_are_refused_and_audited(
    api: httpx.AsyncClient, plaid: Container, standin: PlaidStandIn, clock: FakeClock
) -> None:
    pending = pending_automatic()
    account = await _link(api, standin.public_token(accounts=[pending]))
    body = _webhook(standin, "AUTOMATICALLY_VERIFIED", pending.account_id)
    now = int(clock.now().timestamp())
    changed = body.replace(b"AUTOMATICALLY_VERIFIED", b"VERIFICATION_EXPIRED")
    bad = {
        "changed body": (changed, standin.sign_webhook(body, iat=now)),
        "iat six minutes old": (body, standin.sign_webhook(body, iat=now - 360)),
        "alg none": (body, standin.sign_webhook(body, iat=now, alg="none")),
        "HS256 keyed with the public key": (body, standin.sign_webhook(body, iat=now, alg="HS256")),
        "unknown kid": (body, standin.sign_webhook(body, iat=now, kid="kid-nobody-published")),
        "no header": (body, None),
    }
    for why, (sent, header) in bad.items():
        answer = await _deliver(api, sent, header)
        assert answer.status_code == 400, (why, answer.text)
        assert answer.json()["error"]["code"] == "webhook_signature_invalid", why
    await run_once(plaid)
    async with plaid.uow.reading() as repo:
        stored = (await repo.conn.execute(select(t.inbound_webhooks))).all()
        refusals = (
            await repo.conn.execute(
                select(t.audit_events.c.details).where(
                    t.audit_events.c.event_type == "webhook:signature:verify",
                    t.audit_events.c.outcome == "failure",
                )
            )
        ).all()
    assert stored == [], "nothing refused was stored"
    assert len(refusals) == len(bad)
    shown = (await api.get(f"/v1/bank_accounts/{account['id']}")).json()
    assert shown["verification_status"] == "pending_automatic_verification", "nothing applied"


async def test_rotate_tokens_interrupted_half_way_and_run_again_finishes(
    api: httpx.AsyncClient, plaid: Container, standin: PlaidStandIn, clock: FakeClock
) -> None:
    for _ in range(4):
        await _link(api, standin.public_token(accounts=[instant_checking()]))

    class Interrupted(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await plaid.bank_tokens.rotate(progress=stop_after_two)
    assert len(standin.to("/item/access_token/invalidate")) == 2
    clock.advance(minutes=5)
    seen: list[tuple[int, int]] = []
    summary = await plaid.bank_tokens.rotate(progress=lambda d, n: seen.append((d, n)))
    assert (summary.total, summary.rotated, summary.failed) == (4, 2, {})
    assert seen[0] == (2, 4), "the bar starts where the last run stopped"
    assert seen[-1] == (4, 4)
    assert len(standin.to("/item/access_token/invalidate")) == 4, "no item rotated twice"
    async with plaid.uow.reading() as repo:
        items = (await repo.conn.execute(select(t.bank_items))).all()
    for item in items:
        token = await plaid.envelope.open(
            item.access_token,
            Binding.for_row(t.bank_items, "access_token", item.id, item.merchant_id),
        )
        found = await plaid.bank_accounts.provider.item_accounts(token.decode())
        assert found.accounts, "the stored token works at the provider"
    # A day later, every token is due again.
    clock.advance(days=1, minutes=1)
    assert (await plaid.bank_tokens.rotate()).rotated == 4


async def test_a_retried_link_replays_its_answer_without_reusing_the_public_token(
    api: httpx.AsyncClient, standin: PlaidStandIn
) -> None:
    body = {"public_token": standin.public_token(accounts=[instant_checking()])}
    key = {"Idempotency-Key": "link-once"}
    answers = [await api.post("/v1/bank_accounts", json=body, headers=key) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert len(standin.to("/item/public_token/exchange")) == 1
    listed = (await api.get("/v1/bank_accounts")).json()["data"]
    assert [a["id"] for a in listed] == [answers[0].json()["id"]]

    bad = {"public_token": "public-sandbox-00000000-0000-0000-0000-000000000000"}
    key = {"Idempotency-Key": "link-bad"}
    refusals = [await api.post("/v1/bank_accounts", json=bad, headers=key) for _ in range(2)]
    assert [a.status_code for a in refusals] == [400, 400]
    assert refusals[0].json()["error"]["code"] == refusals[1].json()["error"]["code"]
    assert len(standin.to("/item/public_token/exchange")) == 2, "the error is replayed too"
