"""The payment lifecycle over the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx

from strongroom.bootstrap import Container


async def test_authorize_capture_partially_then_refund(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post(
        "/v1/payment_intents",
        json={
            "amount": 2000,
            "currency": "usd",
            "payment_method": "tok_visa",
            "capture_method": "manual",
            "confirm": True,
        },
    )
    assert created.status_code == 200, created.text
    pi = created.json()
    assert pi["status"] == "requires_capture"
    assert pi["amount_capturable"] == 2000

    captured = await client.post(
        f"/v1/payment_intents/{pi['id']}/capture", json={"amount_to_capture": 1500}
    )
    assert captured.json()["status"] == "succeeded"
    assert captured.json()["amount_received"] == 1500

    refund = await client.post("/v1/refunds", json={"payment_intent": pi["id"], "amount": 500})
    assert refund.status_code == 200, refund.text
    assert refund.json()["status"] == "succeeded"

    too_much = await client.post("/v1/refunds", json={"payment_intent": pi["id"], "amount": 1001})
    assert too_much.status_code == 400
    assert too_much.json()["error"]["code"] == "amount_too_large"

    charges = await container.sandbox.list_charges()
    assert [(c["amount_captured"], c["amount_refunded"]) for c in charges] == [(1500, 500)]


async def test_cancel_after_authorization_voids_the_hold(
    client: httpx.AsyncClient, container: Container
) -> None:
    held = await client.post(
        "/v1/payment_intents",
        json={
            "amount": 900,
            "currency": "jpy",
            "payment_method": "tok_mastercard",
            "capture_method": "manual",
            "confirm": True,
        },
    )
    canceled = await client.post(
        f"/v1/payment_intents/{held.json()['id']}/cancel",
        json={"cancellation_reason": "requested_by_customer"},
    )

    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["amount_capturable"] == 0
    assert canceled.json()["cancellation_reason"] == "requested_by_customer"
    assert [c["status"] for c in await container.sandbox.list_charges()] == ["voided"]
    balances = await _balances(container)
    assert balances.get(("gateway_holds", "jpy"), 0) == 0


async def test_cancel_before_confirmation_calls_no_gateway(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post("/v1/payment_intents", json={"amount": 100, "currency": "kwd"})
    canceled = await client.post(f"/v1/payment_intents/{created.json()['id']}/cancel")

    assert canceled.json()["status"] == "canceled"
    assert await container.sandbox.list_charges() == []


async def test_three_d_secure_completed_then_confirmed(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post(
        "/v1/payment_intents",
        json={
            "amount": 4200,
            "currency": "eur",
            "payment_method": "tok_threeDSecureRequired",
            "confirm": True,
        },
    )
    pi = created.json()
    assert pi["status"] == "requires_action"
    url = pi["next_action"]["redirect_to_url"]["url"]
    path = httpx.URL(url).path

    # Confirming before the customer answers keeps it waiting.
    early = await client.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert early.json()["status"] == "requires_action"

    page = await client.get(path)
    assert page.status_code == 200
    assert 'id="complete"' in page.text
    assert (await client.post(f"{path}/complete")).status_code == 200
    assert (await client.get(path)).status_code == 404, "the challenge is answered once"

    done = await client.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert done.json()["status"] == "succeeded"
    assert done.json()["amount_received"] == 4200
    assert [c["amount_captured"] for c in await container.sandbox.list_charges()] == [4200]


async def test_three_d_secure_failed_returns_to_requires_payment_method(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/v1/payment_intents",
        json={
            "amount": 4200,
            "currency": "eur",
            "payment_method": "tok_threeDSecureRequired",
            "confirm": True,
        },
    )
    path = httpx.URL(created.json()["next_action"]["redirect_to_url"]["url"]).path
    await client.post(f"{path}/fail")

    failed = await client.post(f"/v1/payment_intents/{created.json()['id']}/confirm")

    assert failed.status_code == 402
    assert failed.json()["error"]["code"] == "payment_intent_authentication_failure"
    pi = (await client.get(f"/v1/payment_intents/{created.json()['id']}")).json()
    assert pi["status"] == "requires_payment_method"
    assert pi["last_payment_error"]["code"] == "payment_intent_authentication_failure"

    # A new payment method may be tried on the same intent.
    retried = await client.post(
        f"/v1/payment_intents/{pi['id']}/confirm", json={"payment_method": "tok_visa"}
    )
    assert retried.json()["status"] == "succeeded"


async def test_decline_then_retry_with_another_card(client: httpx.AsyncClient) -> None:
    declined = await client.post(
        "/v1/payment_intents",
        json={
            "amount": 300,
            "currency": "usd",
            "payment_method": "tok_chargeDeclined",
            "confirm": True,
        },
    )
    assert declined.status_code == 402
    error = declined.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        "generic_decline",
    )
    pi_id = error["payment_intent"]
    pi = (await client.get(f"/v1/payment_intents/{pi_id}")).json()
    assert pi["status"] == "requires_payment_method"
    assert pi["payment_method"] is None

    ok = await client.post(
        f"/v1/payment_intents/{pi_id}/confirm", json={"payment_method": "tok_visa"}
    )
    assert ok.json()["status"] == "succeeded"


async def test_customers_are_created_fetched_and_attached(client: httpx.AsyncClient) -> None:
    customer = await client.post(
        "/v1/customers", json={"email": "jo@example.com", "metadata": {"tier": "gold"}}
    )
    assert customer.status_code == 200
    fetched = await client.get(f"/v1/customers/{customer.json()['id']}")
    assert fetched.json() == customer.json()

    pi = await client.post(
        "/v1/payment_intents",
        json={"amount": 100, "currency": "usd", "customer": customer.json()["id"]},
    )
    assert pi.json()["customer"] == customer.json()["id"]


async def test_refunds_never_exceed_the_captured_amount_under_concurrency(
    client: httpx.AsyncClient, container: Container
) -> None:
    paid = await client.post(
        "/v1/payment_intents",
        json={"amount": 1000, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
    )
    pi_id = paid.json()["id"]

    responses = await asyncio.gather(
        *(
            client.post("/v1/refunds", json={"payment_intent": pi_id, "amount": 300})
            for _ in range(8)
        )
    )

    succeeded = [r for r in responses if r.status_code == 200]
    assert len(succeeded) == 3
    assert all(r.json()["status"] == "succeeded" for r in succeeded)
    assert all(r.status_code == 400 for r in responses if r.status_code != 200)
    charge = await container.sandbox.charge(paid.json()["latest_charge"])
    assert charge is not None
    assert charge["amount_refunded"] == 900


async def _balances(container: Container) -> dict[tuple[str, str], int]:
    async with container.uow.reading() as repo:
        merchant = await repo.find_merchant_by_name("Acme")
        assert merchant is not None
        return dict(await repo.balances(merchant.id))
