"""The PAN guard refuses any request carrying a card number, wherever it sits, with 400
`pan_detected`, writing nothing and echoing nothing; near-misses reach the routes as before.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Container
from strongroom.domain.pan import find_pans
from strongroom.entrypoints import logs
from tests.integration.test_bad_input import assert_error_shape
from tests.support import row_counts

VISA = "4242424242424242"
AMEX_SPACED = "3782 822463 10005"
MC_DASHED = "5555-5555-5555-4444"
PAYMENT = {"amount": 2000, "currency": "usd"}


@pytest.fixture
def log_output(capsys: pytest.CaptureFixture[str]) -> pytest.CaptureFixture[str]:
    """The server's log set-up, with what it writes (stderr) captured for the test."""
    logs.configure("info")
    capsys.readouterr()
    return capsys


# (what, method, path, keyword arguments for client.request, the param the error names)
REFUSED: list[tuple[str, str, str, dict[str, Any], str]] = [
    (
        "json field",
        "POST",
        "/v1/payment_intents",
        {"json": {**PAYMENT, "payment_method": VISA}},
        "payment_method",
    ),
    (
        "nested metadata",
        "POST",
        "/v1/customers",
        {"json": {"metadata": {"note": f"card {AMEX_SPACED} exp 12/30"}}},
        "metadata.note",
    ),
    (
        "json number",
        "POST",
        "/v1/payment_intents",
        {"json": {"amount": int(VISA), "currency": "usd"}},
        "amount",
    ),
    (
        "json number in exponent form",
        "POST",
        "/v1/payment_intents",
        {"content": b'{"amount": 4.242424242424242e15, "currency": "usd"}'},
        "amount",
    ),
    (
        "json unicode escapes",
        "POST",
        "/v1/customers",
        {
            "content": json.dumps({"description": MC_DASHED}, ensure_ascii=False).replace(
                "5", "\\u0035"
            )
        },
        "description",
    ),
    (
        "json list",
        "POST",
        "/v1/customers",
        {"json": {"metadata": {"cards": [1, VISA]}}},
        "metadata.cards.1",
    ),
    (
        "json key",
        "POST",
        "/v1/customers",
        {"json": {"metadata": {VISA: "x"}}},
        "metadata",
    ),
    ("query string", "GET", "/v1/payment_intents", {"params": {"q": MC_DASHED}}, "query.q"),
    (
        "query string with '+' for spaces",
        "GET",
        "/v1/payment_intents",
        {"params": {"limit": 2, "q": "4242 4242 4242 4242"}},
        "query.q",
    ),
    ("header", "GET", "/v1/payment_intents", {"headers": {"X-Note": AMEX_SPACED}}, "header.x-note"),
    ("path", "GET", f"/v1/payment_intents/{VISA}", {}, "path"),
    (
        "form body",
        "POST",
        "/v1/customers",
        {"data": {"name": "Ada", "card": "4242 4242 4242 4242"}},
        "card",
    ),
    (
        "percent-encoded form body",
        "POST",
        "/v1/customers",
        {
            "content": b"name=Ada&note=%34242424242424242",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        "note",
    ),
    (
        "plain text body",
        "POST",
        "/v1/customers",
        {"content": f"my card is {VISA}".encode(), "headers": {"Content-Type": "text/plain"}},
        "body",
    ),
]


async def _send(
    client: httpx.AsyncClient, method: str, path: str, kw: dict[str, Any]
) -> httpx.Response:
    kw = dict(kw)
    headers = {"Idempotency-Key": "pan-guard-1", **kw.pop("headers", {})}
    return await client.request(method, path, headers=headers, **kw)


@pytest.mark.parametrize(
    ("what", "method", "path", "kw", "param"), REFUSED, ids=[r[0] for r in REFUSED]
)
async def test_a_card_number_anywhere_is_refused_and_nothing_is_written_or_logged(
    client: httpx.AsyncClient,
    container: Container,
    log_output: pytest.CaptureFixture[str],
    what: str,
    method: str,
    path: str,
    kw: dict[str, Any],
    param: str,
) -> None:
    before = await row_counts(container.engines.write)

    response = await _send(client, method, path, kw)

    error = assert_error_shape(response, 400, "pan_detected")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "tokenize" in error["message"]
    assert error["request_id"].startswith("req_")
    assert find_pans(response.text) == []
    assert not any(digits in response.text for digits in ("4242", "8224", "5555"))
    assert await row_counts(container.engines.write) == before
    captured = log_output.readouterr()
    output = captured.err + captured.out
    assert "refused a request carrying a card number" in output
    assert error["request_id"] in output
    assert find_pans(output) == []


NEAR_MISSES = [
    "ORD-2024-000123",
    "order 20240101000123456789",  # a 20-digit run
    "+1 415-555-0132",
    "0044 20 7946 0958",
    "4242424242424241",  # Luhn-invalid
    "1234567812345670",  # Luhn-valid, but no brand's range
    "1735689600000",  # epoch milliseconds
    "2000.00",
    "41234567-1234-4123-8123-123456789012",  # a UUID
]


@pytest.mark.parametrize("text", NEAR_MISSES)
async def test_near_misses_reach_the_routes(
    client: httpx.AsyncClient, container: Container, text: str
) -> None:
    customer = await client.post(
        "/v1/customers", json={"description": text, "metadata": {"note": text}}
    )
    assert customer.status_code == 200, customer.text
    assert customer.json()["metadata"] == {"note": text}

    listing = await client.get("/v1/payment_intents", params={"q": text}, headers={"X-Note": text})
    assert listing.status_code == 200, listing.text

    form = await client.post("/v1/customers", data={"note": text})
    assert form.json()["error"]["code"] != "pan_detected"


async def test_an_ordinary_payment_passes_untouched(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/payment_intents",
        json={
            **PAYMENT,
            "payment_method": "tok_visa",
            "confirm": True,
            "metadata": {"order": "A-1"},
        },
        headers={"Idempotency-Key": "ordinary-1"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
