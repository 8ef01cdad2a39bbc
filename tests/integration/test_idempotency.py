"""Idempotency-Key behaviour on every POST, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from strongroom.adapters.gateways.sandbox import Fault
from strongroom.bootstrap import Container
from strongroom.entrypoints import worker
from strongroom.service_layer.merchants import KeyKind
from tests.integration.gateways import CrashAfterCharge, PausingGateway
from tests.support import FakeClock, row_counts

CHARGE = {"amount": 2000, "currency": "usd", "payment_method": "tok_visa", "confirm": True}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_fifty_concurrent_identical_posts_charge_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-50")) for _ in range(50))
    )

    counts = await row_counts(container.engines.write)
    assert counts["payment_intents"] == 1
    assert len(await container.sandbox.list_charges()) == 1
    originals = [r for r in responses if r.status_code == 200]
    in_use = [r for r in responses if r.status_code == 409]
    assert len(originals) + len(in_use) == 50, [r.status_code for r in responses]
    assert originals, "at least the first request succeeds"
    assert len({r.content for r in originals}) == 1, "every 200 is the original body"
    assert originals[0].json()["status"] == "succeeded"
    for r in in_use:
        assert r.json()["error"]["code"] == "idempotency_key_in_use"
    replayed = [r for r in originals if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == len(originals) - 1


async def test_replay_returns_the_first_status_and_body_exactly(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-replay"))
    again = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-replay"))

    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Request-Id"] != first.headers["Request-Id"]


async def test_a_declined_card_is_replayed_too(
    client: httpx.AsyncClient, container: Container
) -> None:
    body = {**CHARGE, "payment_method": "tok_chargeDeclined"}
    first = await client.post("/v1/payment_intents", json=body, headers=keyed("k-decline"))
    again = await client.post("/v1/payment_intents", json=body, headers=keyed("k-decline"))

    assert first.status_code == 402
    assert first.json()["error"]["decline_code"] == "generic_decline"
    assert (again.status_code, again.content) == (402, first.content)
    assert len(await container.sandbox.list_charges()) == 1


async def test_same_key_with_other_parameters_is_refused(client: httpx.AsyncClient) -> None:
    await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-params"))
    other = await client.post(
        "/v1/payment_intents", json={**CHARGE, "amount": 2001}, headers=keyed("k-params")
    )

    assert other.status_code == 422
    assert other.json()["error"]["type"] == "idempotency_error"
    assert other.json()["error"]["code"] == "idempotency_error"


async def test_same_key_on_another_endpoint_is_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    await client.post("/v1/customers", json={"email": "a@example.com"}, headers=keyed("k-ep"))
    before = await row_counts(container.engines.write)

    other = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-ep"))

    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_error"
    assert await row_counts(container.engines.write) == before


async def test_keys_are_scoped_to_the_merchant(
    client: httpx.AsyncClient, container: Container
) -> None:
    other = await container.merchants.create_merchant("Other")
    other_key = await container.merchants.create_key(other.id, KeyKind.SECRET, livemode=False)

    mine = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("shared"))
    theirs = await client.post(
        "/v1/payment_intents",
        json=CHARGE,
        headers={**keyed("shared"), "Authorization": f"Bearer {other_key.secret}"},
    )

    assert theirs.status_code == 200
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]


async def test_a_request_refused_by_validation_is_not_stored(
    client: httpx.AsyncClient, container: Container
) -> None:
    before = await row_counts(container.engines.write)
    bad = await client.post(
        "/v1/payment_intents", json={**CHARGE, "currency": "xyz"}, headers=keyed("k-valid")
    )
    assert bad.status_code == 400
    assert await row_counts(container.engines.write) == before

    # The key is free: a different, valid request may use it.
    good = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-valid"))
    assert good.status_code == 200
    assert "Idempotent-Replayed" not in good.headers


@pytest.mark.parametrize("length", [256, 1000])
async def test_keys_longer_than_255_characters_are_refused(
    client: httpx.AsyncClient, container: Container, length: int
) -> None:
    before = await row_counts(container.engines.write)
    response = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k" * length))

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Idempotency-Key"
    assert await row_counts(container.engines.write) == before


async def test_a_255_character_key_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k" * 255))
    assert response.status_code == 200


async def test_a_retry_while_the_first_is_running_gets_409(
    client: httpx.AsyncClient, container: Container
) -> None:
    paused = PausingGateway(container.sandbox)
    container.gateways.builtin = paused
    first = asyncio.create_task(
        client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-busy"))
    )
    await paused.entered.wait()

    retry = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-busy"))
    assert retry.status_code == 409
    assert retry.json()["error"]["code"] == "idempotency_key_in_use"

    paused.resume.set()
    assert (await first).status_code == 200
    after = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-busy"))
    assert after.headers["Idempotent-Replayed"] == "true"
    assert after.content == (await first).content


async def test_a_retry_takes_over_a_request_that_died_once_its_lock_expires(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    container.gateways.builtin = CrashAfterCharge(container.sandbox)
    with pytest.raises(RuntimeError):
        await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-dead"))
    container.gateways.builtin = container.sandbox

    still_locked = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-dead"))
    assert still_locked.status_code == 409

    clock.advance(seconds=container.settings.idempotency_lock_seconds + 1)
    resumed = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-dead"))

    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "succeeded"
    assert (await row_counts(container.engines.write))["payment_intents"] == 1
    charges = await container.sandbox.list_charges()
    assert len(charges) == 1
    assert charges[0]["amount_captured"] == 2000


@pytest.mark.parametrize(
    "fault", [Fault.TIMEOUT_BEFORE_CHARGE, Fault.TIMEOUT_AFTER_CHARGE, Fault.SERVER_ERROR]
)
async def test_an_unknown_gateway_outcome_is_settled_by_retrying_the_same_key(
    client: httpx.AsyncClient, container: Container, fault: Fault
) -> None:
    container.sandbox.inject(fault)
    first = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-fault"))
    assert first.status_code == 502
    assert first.json()["error"]["code"] == "gateway_unavailable"

    retry = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-fault"))

    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert retry.json()["status"] == "succeeded"
    charges = await container.sandbox.list_charges()
    assert [c["amount_captured"] for c in charges] == [2000]


async def test_keys_are_kept_24_hours_then_pruned_by_the_worker(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-old"))
    clock.advance(hours=23, minutes=59)
    await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-young"))

    await worker.run_once(container)
    still = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-old"))
    assert still.headers.get("Idempotent-Replayed") == "true", "kept for at least 24 hours"

    clock.advance(minutes=2)
    result = await worker.run_once(container)
    assert result["pruned"] == 1

    reused = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-old"))
    assert "Idempotent-Replayed" not in reused.headers
    young = await client.post("/v1/payment_intents", json=CHARGE, headers=keyed("k-young"))
    assert young.headers.get("Idempotent-Replayed") == "true"
    assert timedelta(hours=container.settings.idempotency_retention_hours) >= timedelta(hours=24)


async def test_a_confirm_that_died_is_finished_by_its_retry_not_refused(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    created = await client.post(
        "/v1/payment_intents",
        json={
            "amount": 700,
            "currency": "usd",
            "payment_method": "tok_visa",
            "capture_method": "manual",
        },
    )
    confirm = f"/v1/payment_intents/{created.json()['id']}/confirm"
    container.gateways.builtin = CrashAfterCharge(container.sandbox)
    with pytest.raises(RuntimeError):
        await client.post(confirm, headers=keyed("k-confirm-dead"))
    container.gateways.builtin = container.sandbox

    clock.advance(seconds=container.settings.idempotency_lock_seconds + 1)
    retry = await client.post(confirm, headers=keyed("k-confirm-dead"))

    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "requires_capture"
    assert len(await container.sandbox.list_charges()) == 1
    replay = await client.post(confirm, headers=keyed("k-confirm-dead"))
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == retry.content


async def test_a_same_key_retry_during_a_gateway_call_is_409_without_calling_the_gateway(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post(
        "/v1/payment_intents", json={"amount": 900, "currency": "usd", "payment_method": "tok_visa"}
    )
    confirm = f"/v1/payment_intents/{created.json()['id']}/confirm"
    paused = PausingGateway(container.sandbox)
    container.gateways.builtin = paused
    first = asyncio.create_task(client.post(confirm, headers=keyed("k-inflight")))
    await paused.entered.wait()
    paused.entered.clear()

    # Bounded only so a regression (a second gateway call that also pauses) fails, not hangs.
    retry = await asyncio.wait_for(client.post(confirm, headers=keyed("k-inflight")), 30)
    other = await asyncio.wait_for(client.post(confirm, headers=keyed("k-other")), 30)

    assert retry.status_code == 409
    assert retry.json()["error"]["code"] == "idempotency_key_in_use"
    assert other.status_code == 409
    assert "processing" in other.json()["error"]["message"]
    assert not paused.entered.is_set(), "nobody else called the gateway meanwhile"
    paused.resume.set()
    assert (await first).json()["status"] == "succeeded"


async def test_a_retry_after_a_gateway_timeout_gets_the_real_outcome(
    client: httpx.AsyncClient, container: Container
) -> None:
    body = {**CHARGE, "payment_method": "tok_chargeDeclined"}
    container.sandbox.inject(Fault.TIMEOUT_AFTER_CHARGE)
    first = await client.post("/v1/payment_intents", json=body, headers=keyed("k-late-decline"))
    assert first.status_code == 502

    retry = await client.post("/v1/payment_intents", json=body, headers=keyed("k-late-decline"))

    assert retry.status_code == 402
    assert retry.json()["error"]["decline_code"] == "generic_decline"
    replay = await client.post("/v1/payment_intents", json=body, headers=keyed("k-late-decline"))
    assert (replay.status_code, replay.content) == (402, retry.content)


async def test_a_retry_after_the_worker_settled_the_payment_gets_the_real_outcome(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    body = {**CHARGE, "payment_method": "tok_chargeDeclinedInsufficientFunds"}
    container.sandbox.inject(Fault.TIMEOUT_AFTER_CHARGE)
    first = await client.post("/v1/payment_intents", json=body, headers=keyed("k-settled"))
    assert first.status_code == 502
    clock.advance(seconds=container.settings.recovery_grace_seconds + 1)
    assert (await worker.run_once(container))["recovered"] == 1

    retry = await client.post("/v1/payment_intents", json=body, headers=keyed("k-settled"))

    assert retry.status_code == 402
    assert retry.json()["error"]["decline_code"] == "insufficient_funds"
    assert len(await container.sandbox.list_charges()) == 1
