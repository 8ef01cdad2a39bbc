"""The payment lifecycle over the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

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
