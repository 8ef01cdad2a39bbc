"""Routing and circuit breakers over the real app, with Stripe played by the local stand-in
server (tests/standins/stripe_server.py, reached by the official SDK over HTTP) and the sandbox
as the fallback: a payment fails over only when Stripe was certainly not reached; a breaker
opens after the threshold, then fails fast (or sends payments to the fallback), and the first
success after the cool-down closes it. The cool-down passes on the test's clock."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Container
from strongroom.service_layer.gateways import CircuitOpen
from tests.standins.stripe_server import StripeStandIn
from tests.support import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
STRIPE_KEY = "sk_test_" + "routing" * 4


@pytest.fixture
def stripe() -> Iterator[StripeStandIn]:
    with StripeStandIn(secret_key=STRIPE_KEY) as server:
        yield server


def closed_port() -> int:
    """A port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def add_account(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    created = await client.post("/v1/gateway_accounts", json=body)
    assert created.status_code == 200, created.text
    account_id: str = created.json()["id"]
    return account_id


def stripe_at(url: str) -> dict[str, Any]:
    return {"provider": "stripe", "credentials": {"secret_key": STRIPE_KEY, "base_url": url}}


async def pay(client: httpx.AsyncClient, key: str, **extra: Any) -> httpx.Response:
    body = {"amount": 1234, "currency": "usd", "payment_method": "tok_visa", "confirm": True}
    return await client.post(
        "/v1/payment_intents", json=body | extra, headers={"Idempotency-Key": key}
    )


async def test_payments_go_where_the_rules_say(
    client: httpx.AsyncClient, stripe: StripeStandIn
) -> None:
    to_stripe = await add_account(client, stripe_at(stripe.url))
    sandbox = await add_account(client, {"provider": "sandbox"})
    rules = {"rules": [{"currency": ["eur"], "gateways": [sandbox]}], "default": [to_stripe]}
    assert (await client.post("/v1/gateway_routing", json=rules)).status_code == 200

    usd = (await pay(client, "usd-1")).json()
    eur = (await pay(client, "eur-1", currency="eur")).json()

    assert (usd["status"], usd["gateway"]) == ("succeeded", "stripe")
    assert (eur["status"], eur["gateway"]) == ("succeeded", "sandbox")
    assert len(stripe.to("POST", "/v1/payment_intents")) == 1
    # A refund goes to the gateway that holds the charge.
    refund = await client.post("/v1/refunds", json={"payment_intent": usd["id"], "amount": 100})
    assert refund.json()["status"] == "succeeded"
    assert len(stripe.to("POST", "/v1/refunds")) == 1


async def test_a_gateway_that_cannot_be_reached_fails_over(
    client: httpx.AsyncClient, container: Container
) -> None:
    down = await add_account(client, stripe_at(f"http://127.0.0.1:{closed_port()}"))
    sandbox = await add_account(client, {"provider": "sandbox"})
    await client.post("/v1/gateway_routing", json={"default": [down, sandbox]})

    paid = (await pay(client, "fo-1")).json()

    assert paid["status"] == "succeeded"
    assert paid["gateway"] == "sandbox"
    assert len(await container.sandbox.list_charges()) == 1


async def test_a_5xx_never_fails_over(
    client: httpx.AsyncClient, container: Container, stripe: StripeStandIn
) -> None:
    """A 5xx may come after a charge: the payment waits for recovery at the same gateway
    (with the same idempotency key), it is never tried elsewhere."""
    to_stripe = await add_account(client, stripe_at(stripe.url))
    sandbox = await add_account(client, {"provider": "sandbox"})
    await client.post("/v1/gateway_routing", json={"default": [to_stripe, sandbox]})
    stripe.fail_next(1, status=500)

    answer = await pay(client, "5xx-1")

    assert answer.status_code == 502
    assert await container.sandbox.list_charges() == []
    retried = (await pay(client, "5xx-1")).json()
    assert (retried["status"], retried["gateway"]) == ("succeeded", "stripe")
    keys = {r.idempotency_key for r in stripe.to("POST", "/v1/payment_intents")}
    assert len(keys) == 1  # the retry reached Stripe with the first call's key


async def test_the_breaker_opens_fails_fast_and_closes_after_the_cool_down(
    client: httpx.AsyncClient, container: Container, stripe: StripeStandIn, clock: FakeClock
) -> None:
    gateways = container.gateways
    gateways.fail_max = 3
    gateways.reset_timeout = 30
    to_stripe = await add_account(client, stripe_at(stripe.url))
    sandbox = await add_account(client, {"provider": "sandbox"})
    await client.post("/v1/gateway_routing", json={"default": [to_stripe, sandbox]})
    stripe.fail_next(3, status=503)

    for n in range(3):
        assert (await pay(client, f"b-{n}")).status_code == 502
    status = {
        s["gateway_account"]: s for s in (await client.get("/v1/gateways/status")).json()["data"]
    }
    assert (status[to_stripe]["state"], status[to_stripe]["consecutive_failures"]) == ("open", 3)

    # Open: a call fails fast without reaching Stripe...
    found = await container.gateway_accounts.account_for_webhook("stripe", to_stripe)
    assert found is not None
    guarded = await gateways.get(found.account.merchant_id, to_stripe)
    seen = len(stripe.requests)
    started = time.perf_counter()
    with pytest.raises(CircuitOpen):
        await guarded.authorize(
            payment_method="tok_visa", amount=1, currency="usd", capture=True, idempotency_key="x"
        )
    assert time.perf_counter() - started < 0.005
    assert len(stripe.requests) == seen
    # ...and a payment goes to the fallback instead.
    fallback = (await pay(client, "b-open")).json()
    assert (fallback["status"], fallback["gateway"]) == ("succeeded", "sandbox")
    assert len(stripe.requests) == seen

    # After the cool-down one trial call goes through; its success closes the breaker.
    clock.advance(seconds=31)
    again = (await pay(client, "b-after")).json()
    assert (again["status"], again["gateway"]) == ("succeeded", "stripe")
    status = {
        s["gateway_account"]: s for s in (await client.get("/v1/gateways/status")).json()["data"]
    }
    assert (status[to_stripe]["state"], status[to_stripe]["consecutive_failures"]) == ("closed", 0)


async def test_a_retry_never_fails_over_after_a_call_that_may_have_charged(
    client: httpx.AsyncClient, container: Container, stripe: StripeStandIn
) -> None:
    """The first call charged at Stripe and lost its answer; when the retry then finds Stripe
    unreachable, it must not try the fallback: that would charge the customer twice."""
    to_stripe = await add_account(client, stripe_at(stripe.url))
    sandbox = await add_account(client, {"provider": "sandbox"})
    await client.post("/v1/gateway_routing", json={"default": [to_stripe, sandbox]})
    stripe.drop_after_charge(1)

    assert (await pay(client, "dup-1")).status_code == 502
    stripe.stop()  # now refused: not reached
    assert (await pay(client, "dup-1")).status_code == 502

    assert await container.sandbox.list_charges() == []
    assert sum(stripe.charges.values()) == 1
