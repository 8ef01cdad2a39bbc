"""Inbound gateway webhooks over the real app, on both databases. Nothing is mocked: Stripe and
Braintree are the local stand-in servers (tests/standins/, real HTTP on 127.0.0.1 reached by the
official SDKs); Stripe deliveries are signed with the stand-in's independent signer
(`sign_webhook`), Braintree's with the SDK's own `webhook_testing.sample_notification`, and the
sandbox's with the `standardwebhooks` library. Processing runs `process_due`, the worker's loop,
and retry delays pass on the test's FakeClock, never by sleeping."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import braintree
import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from strongroom.adapters.db import tables as t
from strongroom.adapters.gateways.stripe import StripeGateway
from strongroom.bootstrap import Container
from strongroom.domain.audit import AuditTag
from tests.integration.test_cli import cli, cli_json
from tests.standins.braintree_server import VALID_NONCE, BraintreeStandIn
from tests.standins.stripe_server import StripeStandIn, new_id, sign_webhook
from tests.support import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
STRIPE_KEY = "sk_test_" + "inbound" * 4
WHSEC = "whsec_" + "bmV3c2VjcmV0" * 3
OLD_WHSEC = "whsec_" + "b2xkc2VjcmV0" * 3


# --- helpers -------------------------------------------------------------------------------------
async def add_account(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/v1/gateway_accounts", json=body)
    assert created.status_code == 200, created.text
    routed = await client.post("/v1/gateway_routing", json={"default": [created.json()["id"]]})
    assert routed.status_code == 200, routed.text
    account: dict[str, Any] = created.json()
    return account


async def pay(client: httpx.AsyncClient, key: str, **extra: Any) -> dict[str, Any]:
    body = {"amount": 1000, "currency": "usd", "payment_method": "tok_visa", "confirm": True}
    answer = await client.post(
        "/v1/payment_intents", json=body | extra, headers={"Idempotency-Key": key}
    )
    assert answer.status_code == 200, answer.text
    pi: dict[str, Any] = answer.json()
    return pi


async def reference(container: Container, pi_id: str) -> str:
    async with container.engines.read.connect() as conn:
        ref = (
            await conn.execute(
                select(t.payment_intents.c.gateway_reference).where(t.payment_intents.c.id == pi_id)
            )
        ).scalar_one()
    assert isinstance(ref, str)
    return ref


async def status_of(client: httpx.AsyncClient, pi_id: str) -> str:
    status: str = (await client.get(f"/v1/payment_intents/{pi_id}")).json()["status"]
    return status


async def inbound_rows(container: Container) -> list[Any]:
    async with container.engines.read.connect() as conn:
        return list((await conn.execute(select(t.inbound_webhooks))).all())


async def verify_failures(container: Container) -> list[Any]:
    a = t.audit_events
    async with container.engines.read.connect() as conn:
        rows = (
            await conn.execute(
                select(a).where(
                    a.c.event_type == str(AuditTag.WEBHOOK_VERIFY), a.c.outcome == "failure"
                )
            )
        ).all()
    return list(rows)


async def drain(container: Container) -> int:
    done = 0
    while n := await container.inbound.process_due(200):
        done += n
    return done


def stripe_event(pi_ref: str, event_id: str | None = None, kind: str = "charge") -> bytes:
    obj = (
        {"id": new_id("ch"), "object": "charge", "payment_intent": pi_ref}
        if kind == "charge"
        else {"id": pi_ref, "object": "payment_intent"}
    )
    event = {
        "id": event_id or new_id("evt"),
        "object": "event",
        "type": "charge.captured" if kind == "charge" else "payment_intent.succeeded",
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


def sandbox_delivery(secret: str, event_id: str, charge: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "charge.updated", "data": {"charge": charge}})
    signature = Webhook(secret).sign(event_id, datetime.now(UTC), body)
    headers = {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body.encode(), headers


# --- Stripe --------------------------------------------------------------------------------------
@pytest.fixture
def stripe_standin() -> Iterator[StripeStandIn]:
    with StripeStandIn(secret_key=STRIPE_KEY) as server:
        yield server


@pytest.fixture
async def stripe_hold(
    client: httpx.AsyncClient, container: Container, stripe_standin: StripeStandIn
) -> tuple[str, str, str]:
    """A Stripe account (secrets: new and old, mid-rotation), a payment held on it and then
    captured at Stripe itself: (account id, intent id, Stripe's PaymentIntent id)."""
    credentials = {
        "secret_key": STRIPE_KEY,
        "base_url": stripe_standin.url,
        "webhook_secrets": [WHSEC, OLD_WHSEC],
    }
    account = await add_account(client, {"provider": "stripe", "credentials": credentials})
    pi = await pay(client, "stripe-hold", capture_method="manual")
    assert pi["status"] == "requires_capture"
    ref = await reference(container, pi["id"])
    direct = StripeGateway(secret_key=STRIPE_KEY, base_url=stripe_standin.url)
    try:
        await direct.capture(reference=ref, amount=1000, idempotency_key="at-stripe-1")
    finally:
        await direct.aclose()
    return account["id"], pi["id"], ref


async def test_a_valid_stripe_event_is_stored_then_applied_by_the_worker(
    client: httpx.AsyncClient, container: Container, stripe_hold: tuple[str, str, str]
) -> None:
    account_id, pi_id, ref = stripe_hold
    body = stripe_event(ref)
    answer = await client.post(
        f"/v1/webhooks/stripe/{account_id}",
        content=body,
        headers={"Stripe-Signature": sign_webhook(body, WHSEC), "Authorization": ""},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": True, "duplicate": False}
    # Stored raw, not yet applied: processing is the worker's.
    [row] = await inbound_rows(container)
    assert (row.status, row.payload.encode(), row.subject) == ("pending", body, ref)
    assert await status_of(client, pi_id) == "requires_capture"

    assert await drain(container) == 1
    assert await status_of(client, pi_id) == "succeeded"
    [row] = await inbound_rows(container)
    assert (row.status, row.attempt_count) == ("processed", 1)


async def test_during_rotation_a_delivery_signed_with_the_old_secret_is_accepted(
    client: httpx.AsyncClient, container: Container, stripe_hold: tuple[str, str, str]
) -> None:
    account_id, pi_id, ref = stripe_hold
    body = stripe_event(ref, kind="payment_intent")
    header = sign_webhook(body, OLD_WHSEC)
    answer = await client.post(
        f"/v1/webhooks/stripe/{account_id}", content=body, headers={"Stripe-Signature": header}
    )
    assert answer.status_code == 200, answer.text
    await drain(container)
    assert await status_of(client, pi_id) == "succeeded"


def _one_byte_changed(body: bytes) -> bytes:
    return body.replace(b'"charge.captured"', b'"charge.capturee"')


@pytest.mark.parametrize(
    "case", ["one_byte", "wrong_secret", "stale_301s", "missing_header", "v0_only"]
)
async def test_a_stripe_delivery_that_fails_verification_is_400_audited_and_not_applied(
    client: httpx.AsyncClient,
    container: Container,
    stripe_hold: tuple[str, str, str],
    case: str,
) -> None:
    account_id, pi_id, ref = stripe_hold
    body = stripe_event(ref)
    headers: dict[str, str] = {}
    match case:
        case "one_byte":
            headers["Stripe-Signature"] = sign_webhook(body, WHSEC)
            body = _one_byte_changed(body)
        case "wrong_secret":
            headers["Stripe-Signature"] = sign_webhook(body, "whsec_" + "d3Jvbmc" * 4)
        case "stale_301s":
            headers["Stripe-Signature"] = sign_webhook(
                body, WHSEC, timestamp=int(time.time()) - 301
            )
        case "v0_only":
            headers["Stripe-Signature"] = sign_webhook(body, WHSEC, scheme="v0")
    answer = await client.post(f"/v1/webhooks/stripe/{account_id}", content=body, headers=headers)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "webhook_signature_invalid"
    assert await inbound_rows(container) == []
    assert await drain(container) == 0
    assert await status_of(client, pi_id) == "requires_capture"
    [audited] = await verify_failures(container)
    details = json.dumps(audited.details)
    assert audited.details["reason"]
    for secretish in ("v1=", "whsec_", ref):
        assert secretish not in details


async def test_an_unknown_endpoint_or_another_providers_is_404(
    client: httpx.AsyncClient, stripe_hold: tuple[str, str, str]
) -> None:
    account_id, _, ref = stripe_hold
    body = stripe_event(ref)
    headers = {"Stripe-Signature": sign_webhook(body, WHSEC)}
    for path in (
        "/v1/webhooks/stripe/gwa_nope",
        f"/v1/webhooks/braintree/{account_id}",
        f"/v1/webhooks/paypal/{account_id}",
    ):
        answer = await client.post(path, content=body, headers=headers)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["type"] == "invalid_request_error"


# --- Braintree -----------------------------------------------------------------------------------
@pytest.fixture
def bt_standin() -> Iterator[BraintreeStandIn]:
    with BraintreeStandIn() as server:
        yield server


def bt_sdk(standin: BraintreeStandIn) -> braintree.BraintreeGateway:
    return braintree.BraintreeGateway(
        braintree.Configuration(
            braintree.Environment.Sandbox,
            merchant_id=standin.merchant_id,
            public_key=standin.public_key,
            private_key=standin.private_key,
        )
    )


@pytest.fixture
async def bt_hold(
    client: httpx.AsyncClient, container: Container, bt_standin: BraintreeStandIn
) -> tuple[str, str, str]:
    credentials = {
        "merchant_id": bt_standin.merchant_id,
        "public_key": bt_standin.public_key,
        "private_key": bt_standin.private_key,
        "environment": "sandbox",
        "base_url": bt_standin.url,
    }
    account = await add_account(client, {"provider": "braintree", "credentials": credentials})
    pi = await pay(client, "bt-hold", capture_method="manual", payment_method=VALID_NONCE)
    assert pi["status"] == "requires_capture", pi
    ref = await reference(container, pi["id"])
    bt_standin.set_status(ref, "submitted_for_settlement")  # captured at Braintree itself
    return account["id"], pi["id"], ref


async def test_a_braintree_notification_made_by_the_sdk_is_applied(
    client: httpx.AsyncClient,
    container: Container,
    bt_standin: BraintreeStandIn,
    bt_hold: tuple[str, str, str],
) -> None:
    account_id, pi_id, ref = bt_hold
    form = bt_sdk(bt_standin).webhook_testing.sample_notification(
        braintree.WebhookNotification.Kind.TransactionSettled, ref
    )
    answer = await client.post(
        f"/v1/webhooks/braintree/{account_id}",
        content=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200, answer.text
    [row] = await inbound_rows(container)
    assert (row.event_type, row.subject) == ("transaction_settled", ref)
    assert await drain(container) == 1
    assert await status_of(client, pi_id) == "succeeded"


async def test_an_altered_braintree_signature_is_400_and_not_applied(
    client: httpx.AsyncClient,
    container: Container,
    bt_standin: BraintreeStandIn,
    bt_hold: tuple[str, str, str],
) -> None:
    account_id, pi_id, ref = bt_hold
    form = bt_sdk(bt_standin).webhook_testing.sample_notification(
        braintree.WebhookNotification.Kind.TransactionSettled, ref
    )
    last = form["bt_signature"][-1]
    form["bt_signature"] = form["bt_signature"][:-1] + ("0" if last != "0" else "1")
    answer = await client.post(
        f"/v1/webhooks/braintree/{account_id}",
        content=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "webhook_signature_invalid"
    assert await inbound_rows(container) == []
    assert await status_of(client, pi_id) == "requires_capture"
    assert len(await verify_failures(container)) == 1


# --- the sandbox (Standard Webhooks) -------------------------------------------------------------
@pytest.fixture
async def sandbox_account(client: httpx.AsyncClient) -> tuple[str, str]:
    account = await add_account(client, {"provider": "sandbox"})
    assert account["webhook_secret"].startswith("whsec_")
    return account["id"], account["webhook_secret"]


async def send(
    client: httpx.AsyncClient, account_id: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(f"/v1/webhooks/sandbox/{account_id}", content=body, headers=headers)


async def test_a_sandbox_event_signed_per_standard_webhooks_is_applied(
    client: httpx.AsyncClient, container: Container, sandbox_account: tuple[str, str]
) -> None:
    account_id, secret = sandbox_account
    pi = await pay(client, "sb-hold", capture_method="manual")
    assert pi["status"] == "requires_capture"
    charge = await reference(container, pi["id"])
    await container.sandbox.capture(reference=charge, amount=1000, idempotency_key="at-gw-1")

    answer = await send(client, account_id, *sandbox_delivery(secret, "msg_1", charge))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": True, "duplicate": False}
    assert await status_of(client, pi["id"]) == "requires_capture"  # stored, not yet applied
    assert await drain(container) == 1
    assert await status_of(client, pi["id"]) == "succeeded"


async def test_a_sandbox_event_with_a_wrong_signature_is_400_and_not_stored(
    client: httpx.AsyncClient, container: Container, sandbox_account: tuple[str, str]
) -> None:
    account_id, _ = sandbox_account
    pi = await pay(client, "sb-hold", capture_method="manual")
    charge = await reference(container, pi["id"])
    await container.sandbox.capture(reference=charge, amount=1000, idempotency_key="at-gw-1")
    other = "whsec_" + "b3RoZXJzZWNyZXQ=" * 2
    body, headers = sandbox_delivery(other, "msg_1", charge)
    tampered_body, good_headers = sandbox_delivery(sandbox_account[1], "msg_2", charge)
    missing = dict(good_headers)
    del missing["webhook-signature"]

    for b, h in (
        (body, headers),
        (tampered_body.replace(b"charge.updated", b"charge.updatee"), good_headers),
        (tampered_body, missing),
    ):
        answer = await send(client, account_id, b, h)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "webhook_signature_invalid"
    assert await inbound_rows(container) == []
    assert await drain(container) == 0
    assert await status_of(client, pi["id"]) == "requires_capture"
    assert len(await verify_failures(container)) == 3


async def test_racing_duplicates_store_one_row_and_apply_it_once(
    client: httpx.AsyncClient, container: Container, sandbox_account: tuple[str, str]
) -> None:
    account_id, secret = sandbox_account
    pi = await pay(client, "sb-hold", capture_method="manual")
    charge = await reference(container, pi["id"])
    await container.sandbox.capture(reference=charge, amount=1000, idempotency_key="at-gw-1")
    body, headers = sandbox_delivery(secret, "msg_dup", charge)

    answers = await asyncio.gather(*(send(client, account_id, body, headers) for _ in range(8)))

    assert [a.status_code for a in answers] == [200] * 8
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    assert len(await inbound_rows(container)) == 1
    # Workers racing for it: one takes it, the others find nothing due.
    done = await asyncio.gather(*(container.inbound.process_due(10) for _ in range(4)))
    assert sum(done) == 1
    [row] = await inbound_rows(container)
    assert (row.status, row.attempt_count) == ("processed", 1)
    assert await status_of(client, pi["id"]) == "succeeded"
    # A delivery after processing is answered 200 and processes nothing.
    late = await send(client, account_id, body, headers)
    assert late.json() == {"received": True, "duplicate": True}
    assert await drain(container) == 0


async def test_an_event_for_an_unknown_charge_is_retried_with_backoff_then_failed_and_replayed(
    client: httpx.AsyncClient,
    container: Container,
    clock: FakeClock,
    sandbox_account: tuple[str, str],
) -> None:
    account_id, secret = sandbox_account
    inbound = container.inbound
    answer = await send(client, account_id, *sandbox_delivery(secret, "msg_early", "ch_later"))
    assert answer.status_code == 200

    assert await inbound.process_due(10) == 0  # no intent has that charge (yet)
    [row] = await inbound_rows(container)
    assert (row.status, row.attempt_count) == ("pending", 1)
    assert row.last_error == "no payment intent has this reference yet"
    first_wait = row.next_attempt_at - clock.now()
    assert 5 <= first_wait.total_seconds() <= 10  # 10 s, jittered down by up to half
    assert await inbound.process_due(10) == 0  # not due yet: no second attempt
    assert (await inbound_rows(container))[0].attempt_count == 1

    waits = [first_wait.total_seconds()]
    for _ in range(inbound.max_attempts - 1):
        clock.advance(hours=1)
        await inbound.process_due(10)
        [row] = await inbound_rows(container)
        if row.next_attempt_at is not None:
            waits.append((row.next_attempt_at - clock.now()).total_seconds())
    assert (row.status, row.attempt_count) == ("failed", inbound.max_attempts)
    # Doubling, each within [d/2, d], capped at an hour.
    for n, wait in enumerate(waits, start=1):
        ceiling = min(3600, 10 * 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling, (n, wait)
    clock.advance(hours=2)
    assert await inbound.process_due(10) == 0  # failed rows are not retried by themselves

    failed = await inbound.list_failed()
    assert [f.id for f in failed] == [row.id]
    assert await inbound.replay([row.id]) == 1
    assert await inbound.list_failed() == []
    [row] = await inbound_rows(container)
    assert (row.status, row.attempt_count) == ("pending", 0)
    assert await inbound.process_due(10) == 0  # still no such charge: back to retrying
    assert (await inbound_rows(container))[0].attempt_count == 1


async def test_replay_all_failed_reprocesses_once_the_intent_exists(
    client: httpx.AsyncClient,
    container: Container,
    clock: FakeClock,
    sandbox_account: tuple[str, str],
) -> None:
    account_id, secret = sandbox_account
    inbound = container.inbound
    pi = await pay(client, "sb-hold", capture_method="manual")
    charge = await reference(container, pi["id"])
    await send(client, account_id, *sandbox_delivery(secret, "msg_x", "ch_unknown"))
    for _ in range(inbound.max_attempts):
        await inbound.process_due(10)
        clock.advance(hours=1)
    assert len(await inbound.list_failed()) == 1
    # An operator repairs the row's cause; here: the event was for a charge that now exists.
    async with container.engines.write.begin() as conn:
        await conn.execute(t.inbound_webhooks.update().values(subject=charge))
    await container.sandbox.void(reference=charge, idempotency_key="void-at-gw")

    assert await inbound.replay(all_failed=True) == 1
    assert await inbound.process_due(10) == 1
    assert await status_of(client, pi["id"]) == "canceled"
    assert await inbound.replay(all_failed=True) == 0  # processed rows are not replayed


# --- many events, shuffled, duplicated, concurrent -----------------------------------------------
# PostgreSQL only, the production store, where concurrent workers really overlap; the ordering
# rules under it run on both stores in the tests above.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_thousand_shuffled_duplicated_concurrent_events_end_as_in_order_delivery(
    client: httpx.AsyncClient, container: Container, sandbox_account: tuple[str, str]
) -> None:
    """100 payments, 10 events each. Half of each payment's events happened before the change
    at the gateway and are delivered (shuffled) and processed before it; after the change the
    rest arrive shuffled, 30% of all 1,000 delivered a second time (so stale events arrive after
    newer ones), in concurrent batches racing the worker. In-order delivery ends each payment in
    the state of its last event, which is the gateway's final state: that is what we expect."""
    account_id, secret = sandbox_account
    rng = random.Random(5)
    # (The sandbox's retrieve does not report an answered 3-D Secure challenge, so a pending
    # challenge is one of the states that must simply stay put.)
    plans = ["capture", "void", "capture", "untouched", "challenge"]
    expected_status = {
        "capture": "succeeded",
        "void": "canceled",
        "untouched": "requires_capture",
        "challenge": "requires_action",
    }
    payments: list[tuple[str, str, str]] = []  # (intent, charge, plan)
    for i in range(100):
        plan = plans[i % len(plans)]
        extra: dict[str, Any] = (
            {"payment_method": "tok_threeDSecureRequired"}
            if plan == "challenge"
            else {"capture_method": "manual"}
        )
        pi = await pay(client, f"bulk-{i}", **extra)
        payments.append((pi["id"], await reference(container, pi["id"]), plan))

    deliveries = {
        f"msg_{i}_{n}": sandbox_delivery(secret, f"msg_{i}_{n}", charge)
        for i, (_, charge, _) in enumerate(payments)
        for n in range(10)
    }
    before = [k for k in deliveries if int(k.rsplit("_", 1)[1]) < 5]
    after = [k for k in deliveries if int(k.rsplit("_", 1)[1]) >= 5]
    rng.shuffle(before)
    for start in range(0, len(before), 25):
        early = await asyncio.gather(
            *(send(client, account_id, *deliveries[k]) for k in before[start : start + 25])
        )
        assert [a.status_code for a in early] == [200] * len(early)
    await drain(container)

    for i, (_, charge, plan) in enumerate(payments):
        match plan:
            case "capture":
                await container.sandbox.capture(
                    reference=charge, amount=1000, idempotency_key=f"gw-cap-{i}"
                )
            case "void":
                await container.sandbox.void(reference=charge, idempotency_key=f"gw-void-{i}")

    again = rng.sample(sorted(deliveries), k=300)
    wave = after + again
    rng.shuffle(wave)
    answers: list[httpx.Response] = []
    for start in range(0, len(wave), 25):
        batch = wave[start : start + 25]
        results = await asyncio.gather(
            *(send(client, account_id, *deliveries[k]) for k in batch),
            container.inbound.process_due(50),
            container.inbound.process_due(50),
        )
        answers += [r for r in results if isinstance(r, httpx.Response)]
    await drain(container)

    assert [a.status_code for a in answers] == [200] * len(wave)
    final = {pi_id: await status_of(client, pi_id) for pi_id, _, _ in payments}
    assert final == {pi_id: expected_status[plan] for pi_id, _, plan in payments}
    rows = await inbound_rows(container)
    assert len(rows) == 1000
    assert {(r.status, r.attempt_count) for r in rows} == {("processed", 1)}
    # Applied once: one terminal event per payment that reached a terminal state.
    async with container.engines.read.connect() as conn:
        counts = dict(
            (
                await conn.execute(
                    select(t.outbox.c.aggregate_id, func.count())
                    .where(
                        t.outbox.c.type.in_(["payment_intent.succeeded", "payment_intent.canceled"])
                    )
                    .group_by(t.outbox.c.aggregate_id)
                )
            ).all()
        )
    terminal = {pi_id for pi_id, _, plan in payments if plan in ("capture", "void")}
    assert set(counts) == terminal
    assert set(counts.values()) == {1}


# One store: the command's parsing and output do not depend on it; the service layer under it
# runs on both stores in the other tests, and each run starts processes.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_cli_lists_failed_webhooks_and_replays_them(
    client: httpx.AsyncClient,
    container: Container,
    clock: FakeClock,
    database_url: str,
    sandbox_account: tuple[str, str],
) -> None:
    account_id, secret = sandbox_account
    inbound = container.inbound
    for event_id in ("msg_a", "msg_b"):
        await send(client, account_id, *sandbox_delivery(secret, event_id, "ch_missing"))
    for _ in range(inbound.max_attempts):
        await inbound.process_due(10)
        clock.advance(hours=1)

    listed = cli_json(database_url, "webhooks", "failed")
    assert sorted(w["event_id"] for w in listed) == ["msg_a", "msg_b"]
    assert {w["last_error"] for w in listed} == {"no payment intent has this reference yet"}
    first = listed[0]["id"]
    assert cli(database_url, "webhooks", "replay").returncode != 0  # says which ones
    assert cli_json(database_url, "webhooks", "replay", first) == {"replayed": 1}
    assert [w.id for w in await inbound.list_failed()] == [listed[1]["id"]]
    assert cli_json(database_url, "webhooks", "replay", "--all-failed") == {"replayed": 1}
    assert await inbound.list_failed() == []
    # The CLI ran on the real clock: the rows are due from then on.
    clock.current = datetime.now(UTC) + timedelta(seconds=1)
    await inbound.process_due(10)
    assert {(r.status, r.attempt_count) for r in await inbound_rows(container)} == {("pending", 1)}
