"""The demo checkout for merchants who pay through their own Stripe or Braintree account, in a
real browser (Debian's chromium, driven by Playwright) against a real `strongroom serve`.

Stripe and Braintree cannot be reached from here, so both the gateways' APIs and their browser
libraries are local stand-ins (tests/standins/): the server is configured with the stand-ins'
Stripe.js and Drop-in URLs, and the merchant's gateway account points the official SDKs at the
stand-in APIs. The page shows Stripe Elements or Braintree's Drop-in instead of the sandbox's
hosted fields, the customer types a test card, and the payment is made at the stand-in gateway
with the PaymentMethod id or the nonce the widget made. Strongroom itself never receives the
card number: none of the requests to it carries it. (The stand-in libraries draw a plain input
where the real ones use cross-origin iframes; see tests/standins/browser_libraries.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Request, expect

from tests.e2e.server import PortTaken, cli, cli_json, free_port, server_env, serving
from tests.e2e.test_checkout_browser import AMOUNT, PAGE_HOST, Watched, watched
from tests.standins.braintree_server import BraintreeStandIn
from tests.standins.stripe_server import StripeStandIn

__all__ = ["watched"]  # a fixture, imported for pytest to find

STRIPE_SECRET = "sk_test_" + "standin" * 4
DROPIN_PATH = "/web/dropin/1.43.0/js/dropin.min.js"


@dataclass(frozen=True)
class GatewayServer:
    origin: str  # the page's and the API's
    workdir: Path
    env: dict[str, str]
    stripe: StripeStandIn
    braintree: BraintreeStandIn

    def merchant(self, provider: str, credentials: dict[str, Any]) -> tuple[str, str]:
        """A merchant whose payments route to a new account at `provider`, connected with the
        CLI: its publishable and secret Strongroom keys."""
        made = cli_json("merchants", "create", "--name", provider, env=self.env, cwd=self.workdir)
        creds = self.workdir / f"{made['id']}.json"
        creds.write_text(json.dumps(credentials))
        account = cli_json(
            "gateway-accounts", "add", "--merchant", made["id"], "--provider", provider,
            "--credentials", str(creds), env=self.env, cwd=self.workdir,
        )  # fmt: skip
        creds.unlink()
        routing = httpx.post(
            f"{self.origin}/v1/gateway_routing",
            json={"default": [account["id"]]},
            headers={"Authorization": f"Bearer {made['secret_key']}"},
        )
        assert routing.status_code == 200, routing.text
        return made["publishable_key"], made["secret_key"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    workdir = tmp_path_factory.mktemp("checkout_gateways")
    with (
        StripeStandIn(secret_key=STRIPE_SECRET) as stripe,
        BraintreeStandIn() as braintree,
    ):
        env = server_env(
            STRONGROOM_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'strongroom.db'}",
            STRONGROOM_STRIPE_JS_URL=f"{stripe.url}/v3/",
            STRONGROOM_BRAINTREE_DROPIN_URL=f"{braintree.url}{DROPIN_PATH}",
        )
        cli("db", "upgrade", env=env, cwd=workdir)
        for attempt in range(3):
            port = free_port()
            origin = f"http://{PAGE_HOST}:{port}"
            env |= {"STRONGROOM_PUBLIC_URL": origin}
            try:
                with serving(port, env=env, cwd=workdir, log=workdir / "server.log"):
                    yield GatewayServer(origin, workdir, env, stripe, braintree)
                break
            except PortTaken:
                if attempt == 2:
                    raise


def stripe_credentials(server: GatewayServer) -> dict[str, Any]:
    return {
        "secret_key": STRIPE_SECRET,
        "publishable_key": server.stripe.publishable_key,
        "webhook_secrets": ["whsec_standin"],
        "base_url": server.stripe.url,
    }


def braintree_credentials(server: GatewayServer) -> dict[str, Any]:
    bt = server.braintree
    return {
        "merchant_id": bt.merchant_id,
        "public_key": bt.public_key,
        "private_key": bt.private_key,
        "tokenization_key": bt.tokenization_key,
        "base_url": bt.url,
    }


async def pay(watched: Watched, server: GatewayServer, key: str, widget: str, number: str) -> None:
    page = watched.page
    await page.goto(f"{server.origin}/demo/checkout?{urlencode({'key': key})}")
    await expect(page.locator("#checkout")).to_have_attribute("data-widget", widget)
    await expect(page.locator("#pay")).to_be_enabled()  # the library loaded and is ready
    assert await page.locator("#card-frame").count() == 0, "no sandbox fields"
    await page.locator("#standin-card-number").press_sequentially(number)
    await page.locator("#pay").click()


def strongroom_never_saw(watched: Watched, server: GatewayServer, number: str) -> None:
    digits = number.replace(" ", "")

    def carries(request: Request) -> bool:
        return digits in request.url + (request.post_data or "")

    to_strongroom = [r for r in watched.requests if r.url.startswith(server.origin)]
    assert any(r.url.endswith("/demo/checkout/pay") for r in to_strongroom)
    assert not [r.url for r in to_strongroom if carries(r)]


async def latest_intent(server: GatewayServer, secret: str) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=server.origin, headers={"Authorization": f"Bearer {secret}"}
    ) as api:
        listed = (await api.get("/v1/payment_intents", params={"limit": 1})).json()
    intent: dict[str, Any] = listed["data"][0]
    return intent


async def test_stripe_elements_pays_at_stripe(server: GatewayServer, watched: Watched) -> None:
    key, secret = server.merchant("stripe", stripe_credentials(server))
    await pay(watched, server, key, "stripe", "4242 4242 4242 4242")
    await expect(watched.page.locator("#result")).to_have_text("Payment succeeded")
    strongroom_never_saw(watched, server, "4242 4242 4242 4242")

    intent = await latest_intent(server, secret)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", AMOUNT)
    assert intent["payment_method"] == "pm_card_visa"
    [created] = server.stripe.to("POST", "/v1/payment_intents")
    assert created.params["payment_method"] == "pm_card_visa"
    assert created.params["amount"] == str(AMOUNT)


async def test_stripe_elements_shows_a_decline(server: GatewayServer, watched: Watched) -> None:
    key, secret = server.merchant("stripe", stripe_credentials(server))
    await pay(watched, server, key, "stripe", "4000 0000 0000 0002")
    await expect(watched.page.locator("#result")).to_have_text("Your card was declined.")
    await expect(watched.page.locator("#pay")).to_be_enabled()
    intent = await latest_intent(server, secret)
    assert intent["status"] == "requires_payment_method"


async def test_braintree_drop_in_pays_at_braintree(server: GatewayServer, watched: Watched) -> None:
    key, secret = server.merchant("braintree", braintree_credentials(server))
    await pay(watched, server, key, "braintree", "4111 1111 1111 1111")
    await expect(watched.page.locator("#result")).to_have_text("Payment succeeded")
    strongroom_never_saw(watched, server, "4111 1111 1111 1111")

    intent = await latest_intent(server, secret)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", AMOUNT)
    [sale] = server.braintree.recorded("sale")
    assert sale.body["transaction"]["payment_method_nonce"] == "fake-valid-visa-nonce"


async def test_braintree_drop_in_shows_a_decline(server: GatewayServer, watched: Watched) -> None:
    key, secret = server.merchant("braintree", braintree_credentials(server))
    await pay(watched, server, key, "braintree", "4000 1111 1111 1115")
    await expect(watched.page.locator("#result")).not_to_have_text("Processing…")
    await expect(watched.page.locator("#result")).to_have_attribute("data-state", "failed")
    intent = await latest_intent(server, secret)
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["code"] == "card_declined"


def test_a_token_of_another_widget_is_refused(server: GatewayServer) -> None:
    key, _ = server.merchant("stripe", stripe_credentials(server))
    answer = httpx.post(
        f"{server.origin}/demo/checkout/pay",
        json={"key": key, "token": "tok_visa", "amount": AMOUNT, "currency": "usd"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "token"
