"""The sandbox's tokenization, in process over the real ASGI app, on SQLite and PostgreSQL:
POST /v1/tokens turns each test card number into a token that charges as that card would,
stores no number and no security code, refuses what it must without repeating the number,
and is the only route the PAN guard lets a number reach. Also the demo checkout's pages and
its small JSON endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import re
from base64 import b64encode
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy import text as sql

from strongroom.adapters.db.tables import sandbox_tokens
from strongroom.adapters.gateways.port import ChargeState
from strongroom.adapters.gateways.sandbox import TEST_CARDS, CardFacts, SandboxGateway
from strongroom.bootstrap import Container, bootstrap
from strongroom.domain.model import Approved, Declined
from strongroom.domain.pan import brand_of, luhn_valid
from strongroom.entrypoints import logs
from strongroom.entrypoints.api import create_app
from strongroom.entrypoints.api.pages import parse_origin
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings
from tests.integration.test_bad_input import assert_error_shape
from tests.support import FakeClock, row_counts

VISA = "4242424242424242"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
THREE_D_SECURE = "4000002500003155"
FRANCE = "4000002500000003"
NOT_A_TEST_CARD = "4111111111111111"  # Luhn-valid, a Visa number, not one of the sandbox's
CVC = "987"
# The clock stands at 2026-01-01: these expire after it.
EXPIRY = {"card[exp_month]": "12", "card[exp_year]": "2034"}
BASE_URL = "http://127.0.0.1:8000"  # the default public_url, so also the fields' origin

# number → (behaves as, brand, country), as the sandbox's table of Stripe's test cards says.
EXPECTED = {
    VISA: ("tok_visa", "visa", "US"),
    "5555555555554444": ("tok_mastercard", "mastercard", "US"),
    "2223003122003222": ("tok_mastercard", "mastercard", "US"),
    THREE_D_SECURE: ("tok_threeDSecureRequired", "visa", "US"),
    "4000000000003220": ("tok_threeDSecureRequired", "visa", "US"),
    DECLINED: ("tok_chargeDeclined", "visa", "US"),
    INSUFFICIENT: ("tok_chargeDeclinedInsufficientFunds", "visa", "US"),
    FRANCE: ("tok_visa", "visa", "FR"),
    "4000000760000002": ("tok_visa", "visa", "BR"),
    "4000008260000000": ("tok_visa", "visa", "GB"),
    "4000001240000000": ("tok_visa", "visa", "CA"),
}
TOKEN_COLUMNS = {
    "id",
    "merchant_id",
    "behaves_as",
    "brand",
    "last4",
    "country",
    "exp_month",
    "exp_year",
    "created_at",
}


@dataclass(frozen=True)
class Shop:
    merchant_id: str
    publishable: str
    secret: str
    live_publishable: str


@pytest.fixture
async def shop(container: Container, secret_key: str) -> Shop:
    """The merchant behind `secret_key` (the `client` fixture's), with publishable keys."""
    merchant_id = (await container.merchants.authenticate(secret_key)).caller.merchant_id
    create = container.merchants.create_key
    test_pk = await create(merchant_id, KeyKind.PUBLISHABLE, livemode=False)
    live_pk = await create(merchant_id, KeyKind.PUBLISHABLE, livemode=True)
    return Shop(merchant_id, test_pk.secret, secret_key, live_pk.secret)


@pytest.fixture
async def browserless(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no key, addressed to the public (and tokenization) origin."""
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


def card(number: str, cvc: str = CVC, **overrides: str) -> dict[str, str]:
    return {"card[number]": number, **EXPIRY, "card[cvc]": cvc, **overrides}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def tokenize(http: httpx.AsyncClient, key: str, number: str) -> dict[str, Any]:
    response = await http.post("/v1/tokens", data=card(number), headers=bearer(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored_tokens(container: Container) -> list[dict[str, Any]]:
    async with container.engines.write.connect() as conn:
        rows = await conn.execute(select(sandbox_tokens).order_by(sandbox_tokens.c.created_at))
        return [dict(row._mapping) for row in rows]


# --- tokenizing ---------------------------------------------------------------------------------
def test_the_table_of_test_cards_is_the_expected_one() -> None:
    assert {n: (c.behaves_as, c.country) for n, c in TEST_CARDS.items()} == {
        n: (behaves_as, country) for n, (behaves_as, _, country) in EXPECTED.items()
    }
    assert all(luhn_valid(n) and brand_of(n) for n in EXPECTED)


async def test_each_test_card_becomes_a_token_that_keeps_no_number(
    browserless: httpx.AsyncClient,
    container: Container,
    shop: Shop,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info")  # as a server logs
    capsys.readouterr()
    made: dict[str, str] = {}
    for number, (_, brand, country) in EXPECTED.items():
        response = await browserless.post(
            "/v1/tokens", data=card(number), headers=bearer(shop.publishable)
        )
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert number not in response.text
        body = response.json()
        assert re.fullmatch(r"tok_[0-9A-Za-z]{24}", body["id"])
        assert {k: v for k, v in body.items() if k not in ("id", "created")} == {
            "object": "token",
            "type": "card",
            "livemode": False,
            "card": {
                "object": "card",
                "brand": brand,
                "last4": number[-4:],
                "country": country,
                "exp_month": 12,
                "exp_year": 2034,
            },
        }
        made[body["id"]] = number

    rows = await stored_tokens(container)
    assert {row["id"] for row in rows} == set(made)
    for row in rows:
        number = made[row["id"]]
        behaves_as, brand, country = EXPECTED[number]
        assert set(row) == TOKEN_COLUMNS  # no column for a number or a security code
        assert (row["merchant_id"], row["behaves_as"], row["brand"]) == (
            shop.merchant_id,
            behaves_as,
            brand,
        )
        assert (row["last4"], row["country"], row["exp_month"], row["exp_year"]) == (
            number[-4:],
            country,
            12,
            2034,
        )
        assert not any(number in str(value) for value in row.values())
    written = capsys.readouterr()
    assert not any(number in written.out + written.err for number in EXPECTED)


async def test_json_and_a_key_field_as_stripe_js_sends_them(
    browserless: httpx.AsyncClient, shop: Shop
) -> None:
    nested = await browserless.post(
        "/v1/tokens",
        json={
            "key": shop.publishable,
            "card": {"number": f"{VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}", "cvc": CVC}
            | {"exp_month": 3, "exp_year": "34"},  # a two-digit year, as written on a card
        },
    )
    assert nested.status_code == 200, nested.text
    assert nested.json()["card"] | {"brand": "visa"} == {
        "object": "card",
        "brand": "visa",
        "last4": "4242",
        "country": "US",
        "exp_month": 3,
        "exp_year": 2034,
    }
    form = await browserless.post("/v1/tokens", data={**card(DECLINED), "key": shop.publishable})
    assert form.status_code == 200, form.text
    assert form.json()["card"]["last4"] == "0002"


async def test_only_the_fields_origin_may_tokenize_from_a_browser(
    browserless: httpx.AsyncClient, container: Container, shop: Shop
) -> None:
    before = await row_counts(container.engines.write)
    elsewhere = await browserless.post(
        "/v1/tokens",
        data=card(VISA),
        headers={**bearer(shop.publishable), "Origin": "http://shop.example"},
    )
    error = assert_error_shape(elsewhere, 403, "origin_not_allowed")
    assert error["type"] == "permission_error"
    assert "access-control-allow-origin" not in elsewhere.headers
    assert await row_counts(container.engines.write) == before

    own = await browserless.post(
        "/v1/tokens", data=card(VISA), headers={**bearer(shop.publishable), "Origin": BASE_URL}
    )
    assert own.status_code == 200, own.text
    assert "access-control-allow-origin" not in own.headers


@pytest.mark.parametrize(
    ("key", "status", "code", "words"),
    [
        (None, 401, "api_key_invalid", "publishable key"),
        ("secret", 403, "permission_denied", "publishable key"),
        ("live", 403, "livemode_mismatch", "test cards only"),
        ("pk_test_unknownunknownunknownunknown", 401, "api_key_invalid", "Invalid API key"),
    ],
)
async def test_only_a_publishable_test_key_tokenizes(
    browserless: httpx.AsyncClient,
    container: Container,
    shop: Shop,
    key: str | None,
    status: int,
    code: str,
    words: str,
) -> None:
    raw = {"secret": shop.secret, "live": shop.live_publishable}.get(key or "", key)
    before = await row_counts(container.engines.write)
    response = await browserless.post(
        "/v1/tokens", data=card(VISA), headers=bearer(raw) if raw else {}
    )
    error = assert_error_shape(response, status, code)
    assert words in error["message"]
    assert VISA not in response.text
    assert (await row_counts(container.engines.write))["sandbox_tokens"] == before["sandbox_tokens"]


@pytest.mark.parametrize(
    ("fields", "status", "code", "param"),
    [
        (card("4242424242424241"), 402, "incorrect_number", "card[number]"),  # fails Luhn
        (card("42424242"), 402, "incorrect_number", "card[number]"),  # too short
        (card("4242x42424242424"), 402, "incorrect_number", "card[number]"),
        (card(VISA, **{"card[exp_month]": "13"}), 402, "invalid_expiry_month", "card[exp_month]"),
        (card(VISA, **{"card[exp_year]": "2090"}), 402, "invalid_expiry_year", "card[exp_year]"),
        (card(VISA, **{"card[exp_year]": "2025"}), 402, "expired_card", "card[exp_year]"),
        (card(VISA, cvc="12"), 402, "invalid_cvc", "card[cvc]"),
        (card(VISA, cvc="12a"), 402, "invalid_cvc", "card[cvc]"),
        (card(NOT_A_TEST_CARD), 402, "card_declined", "card[number]"),
        ({"card[number]": VISA, **EXPIRY}, 400, "parameter_missing", "card[cvc]"),
    ],
)
async def test_a_bad_card_is_refused_without_repeating_it(
    browserless: httpx.AsyncClient,
    container: Container,
    shop: Shop,
    fields: dict[str, str],
    status: int,
    code: str,
    param: str,
) -> None:
    before = await row_counts(container.engines.write)
    response = await browserless.post("/v1/tokens", data=fields, headers=bearer(shop.publishable))
    error = assert_error_shape(response, status, code)
    assert error["param"] == param
    assert fields["card[number]"] not in response.text
    assert fields["card[number]"][-4:] not in error["message"]
    if code == "card_declined":
        assert error["decline_code"] == "test_mode_live_card"
        assert "Use a sandbox test card" in error["message"]
    assert await row_counts(container.engines.write) == before


# --- charging with a token ----------------------------------------------------------------------
async def test_a_token_charges_as_its_test_card(
    client: httpx.AsyncClient, browserless: httpx.AsyncClient, container: Container, shop: Shop
) -> None:
    async def pay(number: str) -> httpx.Response:
        token = (await tokenize(browserless, shop.publishable, number))["id"]
        return await client.post(
            "/v1/payment_intents",
            json={"amount": 2000, "currency": "usd", "payment_method": token, "confirm": True},
        )

    paid = await pay(VISA)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["amount_received"]) == ("succeeded", 2000)

    declined = await pay(DECLINED)
    error = assert_error_shape(declined, 402, "card_declined")
    assert (error["decline_code"], error["message"]) == (
        "generic_decline",
        "Your card was declined.",
    )
    short = assert_error_shape(await pay(INSUFFICIENT), 402, "card_declined")
    assert short["decline_code"] == "insufficient_funds"

    # A decline is read back from the gateway with the card's own reasons.
    failed = await client.get(f"/v1/payment_intents/{error['payment_intent']}")
    assert failed.json()["status"] == "requires_payment_method"
    charges = await container.sandbox.list_charges()
    declined_charge = next(ch for ch in charges if ch["status"] == "declined")
    status = await container.sandbox.retrieve(reference=declined_charge["id"])
    assert status.state is ChargeState.FAILED
    assert status.decline is not None
    assert status.decline.decline_code in ("generic_decline", "insufficient_funds")

    challenged = await pay(THREE_D_SECURE)
    intent = challenged.json()
    assert intent["status"] == "requires_action", challenged.text
    assert await container.sandbox.answer_challenge(intent["latest_charge"], succeeded=True)
    done = await client.post(f"/v1/payment_intents/{intent['id']}/confirm")
    assert (done.json()["status"], done.json()["amount_received"]) == ("succeeded", 2000)


async def test_an_unknown_token_is_no_payment_method(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/payment_intents",
        json={
            "amount": 2000,
            "currency": "usd",
            "payment_method": "tok_000000000000000000000000",
            "confirm": True,
        },
    )
    assert_error_shape(response, 402, "payment_method_invalid")


async def test_card_facts_for_fixed_and_made_tokens(
    browserless: httpx.AsyncClient, container: Container, shop: Shop
) -> None:
    sandbox = container.sandbox
    assert await sandbox.card_facts("tok_visa") == CardFacts("visa", "US", "4242")
    assert await sandbox.card_facts("tok_mastercard") == CardFacts("mastercard", "US", "4444")
    assert await sandbox.card_facts("tok_chargeDeclined") == CardFacts("visa", "US", "0002")
    french = (await tokenize(browserless, shop.publishable, FRANCE))["id"]
    assert await sandbox.card_facts(french) == CardFacts("visa", "FR", "0003")
    master = (await tokenize(browserless, shop.publishable, "5555555555554444"))["id"]
    assert await sandbox.card_facts(master) == CardFacts("mastercard", "US", "4444")
    assert await sandbox.card_facts("tok_000000000000000000000000") is None
    assert await sandbox.card_facts("pm_card_visa") is None


async def test_another_process_finds_tokens_while_a_payment_holds_the_write_lock(
    browserless: httpx.AsyncClient, container: Container, shop: Shop
) -> None:
    """Routing asks for a card's facts inside a payment's write transaction. A sandbox that has
    not seen the token (another process's) reads it through the read engine: on SQLite it does
    not wait for that transaction's lock."""
    visa = (await tokenize(browserless, shop.publishable, FRANCE))["id"]
    declined = (await tokenize(browserless, shop.publishable, INSUFFICIENT))["id"]
    other = SandboxGateway(
        container.engines.write,
        read_engine=container.engines.read,
        public_url=container.settings.public_url,
        clock=container.clock,
    )
    async with container.engines.write.begin() as held:
        await held.execute(sql("SELECT 1"))  # the write lock, on SQLite
        # A guard against a hang, not a timing assumption: the answer needs no lock.
        facts = await asyncio.wait_for(other.card_facts(visa), timeout=10)
    assert facts == CardFacts("visa", "FR", "0003")

    approved = await other.authorize(
        payment_method=visa, amount=700, currency="eur", capture=True, idempotency_key="p1"
    )
    assert isinstance(approved, Approved)
    assert approved.captured
    refused = await other.authorize(
        payment_method=declined, amount=700, currency="eur", capture=True, idempotency_key="p2"
    )
    assert isinstance(refused, Declined)
    assert refused.decline_code == "insufficient_funds"


# --- the PAN guard keeps its one exception narrow -----------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "param"),
    [
        ("POST", "/v1/payment_intents", {"json": {"amount": 1, "payment_method": VISA}}, None),
        ("POST", "/v1/tokens", {"params": {"note": VISA}, "data": card(VISA)}, "query.note"),
        ("POST", "/v1/tokens", {"headers": {"X-Card": VISA}, "data": card(VISA)}, "header.x-card"),
        ("PUT", "/v1/tokens", {"data": card(VISA)}, None),
        ("POST", "/v1/tokens/", {"data": card(VISA)}, None),
        ("POST", "/v1/tokens/x", {"data": card(VISA)}, None),
        ("POST", "/v1//tokens", {"data": card(VISA)}, None),
        ("POST", "/demo/checkout/pay", {"json": {"token": VISA}}, None),
    ],
)
async def test_the_pan_guard_still_refuses_numbers_everywhere_else(
    browserless: httpx.AsyncClient,
    container: Container,
    shop: Shop,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    param: str | None,
) -> None:
    before = await row_counts(container.engines.write)
    sent = {**kwargs, "headers": {**bearer(shop.publishable), **kwargs.get("headers", {})}}
    response = await browserless.request(method, path, **sent)
    error = assert_error_shape(response, 400, "pan_detected")
    if param is not None:
        assert error["param"] == param
    assert VISA not in response.text
    assert await row_counts(container.engines.write) == before


# --- the hosted fields and the demo checkout ----------------------------------------------------
def _inline_hashes(page: str, tag: str) -> set[str]:
    return {
        "'sha256-" + b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    }


def _csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


async def test_the_fields_page_is_framed_by_its_parent_only(
    browserless: httpx.AsyncClient, shop: Shop
) -> None:
    response = await browserless.get(
        "/sandbox/fields", params={"key": shop.publishable, "origin": "https://Shop.example:443"}
    )
    assert response.status_code == 200, response.text
    csp = _csp(response)
    assert csp["frame-ancestors"] == "https://shop.example"
    assert csp["connect-src"] == "'self'"
    assert csp["default-src"] == "'none'"
    scripts = _inline_hashes(response.text, "script")
    assert len(scripts) == 1
    assert set(csp["script-src"].split()) == scripts  # no 'unsafe-inline', nothing else
    assert set(csp["style-src"].split()) == _inline_hashes(response.text, "style")
    assert 'data-parent-origin="https://shop.example"' in response.text
    assert "postMessage(message, parentOrigin)" in response.text
    assert '"*"' not in response.text
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("params", "host", "status", "words"),
    [
        ({"origin": "https://shop.example/checkout"}, None, 400, "origin must be"),
        ({"origin": "*"}, None, 400, "origin must be"),
        ({"origin": "javascript:alert(1)"}, None, 400, "origin must be"),
        ({"origin": "https://shop.example; script-src *"}, None, 400, "origin must be"),
        ({"key": "pk_live_abc"}, None, 400, "test cards only"),
        ({}, "shop.example", 404, "tokenization origin only"),
    ],
)
async def test_the_fields_page_refuses_what_it_cannot_serve_safely(
    browserless: httpx.AsyncClient,
    params: dict[str, str],
    host: str | None,
    status: int,
    words: str,
) -> None:
    query = {"key": "pk_test_abc", "origin": "https://shop.example", **params}
    headers = {"Host": host} if host else {}
    response = await browserless.get("/sandbox/fields", params=query, headers=headers)
    assert response.status_code == status, response.text
    assert words in response.text
    assert "<script" not in response.text


@pytest.fixture
async def two_origins(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the same database, with the page at localhost and the fields at 127.0.0.1."""
    split = settings.model_copy(
        update={"public_url": "http://localhost:8000", "tokenization_url": "http://127.0.0.1:8000/"}
    )
    built = bootstrap(split, clock=clock)
    try:
        transport = httpx.ASGITransport(app=create_app(built))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as http:
            yield http
    finally:
        await built.aclose()


async def test_the_demo_page_embeds_the_fields_from_their_origin(
    two_origins: httpx.AsyncClient, shop: Shop
) -> None:
    http = two_origins
    response = await http.get(
        "/demo/checkout", params={"key": shop.publishable, "amount": 1999, "currency": "EUR"}
    )
    assert response.status_code == 200, response.text
    page = response.text
    assert '<strong id="amount">19.99 EUR</strong>' in page
    src = re.search(r'<iframe id="card-frame" [^>]*src="([^"]+)"', page)
    assert src is not None
    assert src.group(1).startswith("http://127.0.0.1:8000/sandbox/fields?key=pk_test_")
    assert "origin=http%3A%2F%2Flocalhost%3A8000" in src.group(1)
    csp = _csp(response)
    assert csp["frame-src"] == "http://127.0.0.1:8000"
    assert csp["frame-ancestors"] == "'none'"
    assert set(csp["script-src"].split()) == _inline_hashes(page, "script")
    assert "<script src" not in page  # no external scripts

    japanese = await http.get(
        "/demo/checkout", params={"key": shop.publishable, "amount": 500, "currency": "jpy"}
    )
    assert '<strong id="amount">500 JPY</strong>' in japanese.text
    secret = await http.get("/demo/checkout", params={"key": shop.secret})
    assert_error_shape(secret, 403, "permission_denied")


async def test_the_demo_pays_with_its_merchants_tokens_only(
    browserless: httpx.AsyncClient, container: Container, shop: Shop
) -> None:
    async def pay(token: str, key: str = shop.publishable) -> httpx.Response:
        return await browserless.post(
            "/demo/checkout/pay",
            json={"key": key, "token": token, "amount": 2000, "currency": "usd"},
        )

    token = (await tokenize(browserless, shop.publishable, VISA))["id"]
    paid = await pay(token)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "succeeded"

    declined = await pay((await tokenize(browserless, shop.publishable, DECLINED))["id"])
    assert assert_error_shape(declined, 402, "card_declined")["message"] == (
        "Your card was declined."
    )

    # Another merchant's publishable key cannot spend this merchant's token, and fixed test
    # tokens are not the hosted fields'.
    other = await container.merchants.create_merchant("Other")
    other_pk = await container.merchants.create_key(other.id, KeyKind.PUBLISHABLE, livemode=False)
    assert_error_shape(await pay(token, other_pk.secret), 400, "token_invalid")
    assert_error_shape(await pay("tok_visa"), 400, "token_invalid")
    assert_error_shape(await pay(token, shop.live_publishable), 403, "livemode_mismatch")


async def test_the_demo_confirms_only_its_own_intents_after_3ds(
    client: httpx.AsyncClient, browserless: httpx.AsyncClient, container: Container, shop: Shop
) -> None:
    token = (await tokenize(browserless, shop.publishable, THREE_D_SECURE))["id"]
    started = await browserless.post(
        "/demo/checkout/pay",
        json={"key": shop.publishable, "token": token, "amount": 2000, "currency": "usd"},
    )
    intent = started.json()
    assert intent["status"] == "requires_action", started.text

    async def confirm(intent_id: str) -> httpx.Response:
        return await browserless.post(
            "/demo/checkout/confirm", json={"key": shop.publishable, "payment_intent": intent_id}
        )

    pending = await confirm(intent["id"])
    assert pending.json()["status"] == "requires_action"
    await container.sandbox.answer_challenge(intent["latest_charge"], succeeded=True)
    done = await confirm(intent["id"])
    assert (done.json()["status"], done.json()["amount_received"]) == ("succeeded", 2000)
    again = await confirm(intent["id"])  # a reload: answered as it stands
    assert again.json()["status"] == "succeeded"

    not_demo = await client.post(
        "/v1/payment_intents",
        json={"amount": 100, "currency": "usd", "payment_method": "tok_threeDSecureRequired"}
        | {"confirm": True},
    )
    assert_error_shape(await confirm(not_demo.json()["id"]), 404, "resource_missing")


async def test_the_demo_does_not_exist_in_production(
    database_url: str, kms_url: str, reporting_url: str, clock: FakeClock
) -> None:
    settings = Settings(
        database_url=database_url,
        env="production",
        secret_key="s" * 40,
        kms_url=kms_url,
        reporting_url=reporting_url,
    )
    built = bootstrap(settings, clock=clock)
    try:
        transport = httpx.ASGITransport(app=create_app(built))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            page = await http.get("/demo/checkout", params={"key": "pk_test_x"})
            assert_error_shape(page, 404, "resource_missing")
            pay = await http.post(
                "/demo/checkout/pay",
                json={"key": "pk_test_x", "token": "tok_x", "amount": 1, "currency": "usd"},
            )
            assert_error_shape(pay, 404, "resource_missing")
    finally:
        await built.aclose()


def test_origins_are_written_as_browsers_write_them() -> None:
    assert parse_origin("HTTP://LocalHost:80") == "http://localhost"
    assert parse_origin("https://[::1]:8443") == "https://[::1]:8443"
    assert parse_origin("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    for bad in ("null", "http://a.example/", "http://u@a.example", "ftp://a.example", "http://a:0"):
        assert parse_origin(bad) is None, bad
