"""The PAN guard refuses any request carrying a card number, wherever it sits, with 400
`pan_detected`, writing nothing and echoing nothing; near-misses reach the routes as before.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from strongroom.bootstrap import Container
from strongroom.domain.pan import find_pans
from strongroom.entrypoints import logs
from strongroom.entrypoints.api.pan_guard import find_in_body, parsed_as_json
from tests.integration.test_bad_input import assert_error_shape
from tests.support import row_counts

VISA = "4242424242424242"
AMEX_SPACED = "3782 822463 10005"
MC_DASHED = "5555-5555-5555-4444"
PAYMENT = {"amount": 2000, "currency": "usd"}
NOTE = {"metadata": {"note": "4242 4242 4242 4242"}}
NBSP_VISA = "4242\u00a04242\u00a04242\u00a04242"


def encoded(document: Any, encoding: str) -> bytes:
    return json.dumps(document).encode(encoding)


def escaped(document: Any) -> bytes:
    """JSON with every '4' written as a \\u escape: no digit run shows in the raw text."""
    return json.dumps(document).replace("4", "\\u0034").encode()


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
    # JSON as FastAPI reads it: json.loads(bytes) detects UTF-8, UTF-16 and UTF-32, with or
    # without a byte order mark, whatever the charset parameter says.
    *(
        (
            f"json in {encoding}",
            "POST",
            "/v1/customers",
            {
                "content": encoded(NOTE, encoding),
                "headers": {"Content-Type": "application/json"},
            },
            "metadata.note",
        )
        for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")
    ),
    (
        "json in utf-8 with a byte order mark",
        "POST",
        "/v1/customers",
        {"content": encoded(NOTE, "utf-8-sig"), "headers": {"Content-Type": "application/json"}},
        "metadata.note",
    ),
    (
        "json in utf-16 with a charset parameter",
        "POST",
        "/v1/customers",
        {
            "content": encoded(NOTE, "utf-16-le"),
            "headers": {"Content-Type": "application/json; charset=utf-16"},
        },
        "metadata.note",
    ),
    (
        "json in utf-16 labelled utf-8",
        "POST",
        "/v1/customers",
        {
            "content": encoded(NOTE, "utf-16"),
            "headers": {"Content-Type": "Application/JSON ; charset=UTF-8"},
        },
        "metadata.note",
    ),
    (
        "escaped json with a charset parameter",
        "POST",
        "/v1/customers",
        {
            "content": escaped({"description": VISA}),
            "headers": {"Content-Type": "application/json;charset=latin-1"},
        },
        "description",
    ),
    (
        "escaped json as application/vnd.api+json",
        "POST",
        "/v1/customers",
        {
            "content": escaped({"description": VISA}),
            "headers": {"Content-Type": "application/vnd.api+json"},
        },
        "description",
    ),
    (
        "escaped json as application/x-www-form-urlencoded+json",
        "POST",
        "/v1/customers",
        {
            "content": escaped({"description": VISA}),
            "headers": {"Content-Type": "application/x-www-form-urlencoded+json"},
        },
        "description",
    ),
    (
        "escaped json with no content type",
        "POST",
        "/v1/customers",
        {"content": escaped({"description": VISA})},
        "description",
    ),
    (
        "utf-16 json with no content type",
        "POST",
        "/v1/customers",
        {"content": encoded(NOTE, "utf-16-be")},
        "metadata.note",
    ),
    (
        "json with no-break spaces between groups",
        "POST",
        "/v1/customers",
        {"content": json.dumps({"description": NBSP_VISA}, ensure_ascii=False).encode()},
        "description",
    ),
    (
        "json with tabs between groups",
        "POST",
        "/v1/customers",
        {"json": {"metadata": {"note": "\t".join(("4242",) * 4)}}},
        "metadata.note",
    ),
    (
        "json key repeated, the card in the value json.loads drops",
        "POST",
        "/v1/customers",
        {"content": escaped({"description": VISA})[:-1] + b', "description": "ok"}'},
        "description",
    ),
    (
        "json number with a negative exponent",
        "POST",
        "/v1/payment_intents",
        {"content": b'{"amount": 42424242424242420e-1, "currency": "usd"}'},
        "amount",
    ),
    (
        "invalid json hiding a card behind escapes",
        "POST",
        "/v1/customers",
        {"content": escaped({"description": VISA})[:-2]},
        "body",
    ),
    (
        "plain text body in utf-16",
        "POST",
        "/v1/customers",
        {"content": f"card {VISA}".encode("utf-16"), "headers": {"Content-Type": "text/plain"}},
        "body",
    ),
    (
        "form body with a no-break space, percent-encoded",
        "POST",
        "/v1/customers",
        {
            "content": b"name=Ada&note=4242%C2%A04242%C2%A04242%C2%A04242",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        "note",
    ),
    (
        "query string with tabs between groups",
        "GET",
        "/v1/payment_intents",
        {"params": {"q": "4242\t4242\t4242\t4242"}},
        "query.q",
    ),
    (
        "header in utf-8 with no-break spaces",
        "GET",
        "/v1/payment_intents",
        {"headers": {"X-Note": NBSP_VISA.encode()}},
        "header.x-note",
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


# Content types FastAPI reads a body as JSON for, and some it does not: the guard must decide
# exactly as FastAPI does (fastapi/routing.py), or a body it reads one way reaches the routes
# read the other.
CONTENT_TYPES = [
    "application/json",
    "APPLICATION/JSON",
    "application/json; charset=utf-16",
    "  application/json ;charset=latin-1",
    "application/vnd.api+json",
    "application/merge-patch+json",
    "application/x-www-form-urlencoded+json",
    "application/json+xml",
    "application/jsonx",
    "application/x-json",
    "text/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "json",
    "application/json/x",
    "application/+json",
    "application/json;",
    ";application/json",
]


class EchoBody(BaseModel):
    note: str


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_the_guard_reads_json_exactly_when_fastapi_does(content_type: str) -> None:
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: EchoBody) -> dict[str, str]:
        return {"note": body.note}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/echo", content=b'{"note": "x"}', headers={"Content-Type": content_type}
        )
    fastapi_parsed = response.status_code == 200
    assert parsed_as_json(content_type.lower()) == fastapi_parsed


def test_a_body_without_a_content_type_is_read_as_json() -> None:
    """FastAPI reads one as JSON when a route is not strict about the content type."""
    assert parsed_as_json("")
    assert find_in_body(escaped({"note": VISA}), "") == "note"


async def test_json_in_utf_16_without_a_card_reaches_the_routes(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/customers",
        content=json.dumps({"description": "Ada", "metadata": {"order": "A-1"}}).encode("utf-16"),
        headers={"Content-Type": "application/json; charset=utf-16"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"order": "A-1"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"customer": "cus_8e0c3b4e2f5c4a47", "amount": 2000}',  # hex ids: no exponent
        b'{"amount": 2.5e3, "rate": 1e-2}',  # exponents, but no card in the numbers
        '{"note": "caf\u00e9 \u00a0 2000.00\u00a0USD"}'.encode(),
        '{"note": "na\u00efve"}'.encode("utf-16"),
    ],
)
def test_json_bodies_without_a_card_pass(body: bytes) -> None:
    assert find_in_body(body, "application/json") is None
