"""Schemathesis over the whole OpenAPI document of a running `strongroom serve`, on SQLite and
on PostgreSQL: it finds no 5xx and no response that breaks the schema (status code, content
type and body all as documented), for valid and invalid requests alike."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.server import LiveServer

# Per operation and mode (positive, negative): 20, a third fewer than before, for CI's time.
MAX_EXAMPLES = 10
TOKENS = [
    "tok_visa",
    "tok_mastercard",
    "tok_chargeDeclined",
    "tok_chargeDeclinedInsufficientFunds",
    "tok_threeDSecureRequired",
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def seed(server: LiveServer) -> dict[str, list[str]]:
    """Objects in every state worth reaching, so generated ids sometimes name real ones."""
    intents: list[str] = []
    with server.client() as http:

        def create(**body: Any) -> dict[str, Any]:
            response = http.post("/v1/payment_intents", json={"currency": "usd", **body})
            assert response.status_code in (200, 402), response.text
            data: dict[str, Any] = response.json()
            if response.status_code == 402:
                data = http.get(f"/v1/payment_intents/{data['error']['payment_intent']}").json()
            intents.append(data["id"])
            return data

        succeeded = create(amount=5000, payment_method="tok_visa", confirm=True)
        assert succeeded["status"] == "succeeded"
        held = create(amount=4000, payment_method="tok_visa", confirm=True, capture_method="manual")
        assert held["status"] == "requires_capture"
        assert create(amount=3000, payment_method="tok_mastercard")["status"] == (
            "requires_confirmation"
        )
        assert create(amount=2000)["status"] == "requires_payment_method"
        assert create(amount=1000, payment_method="tok_chargeDeclined", confirm=True)["status"] == (
            "requires_payment_method"
        )
        assert create(amount=1500, payment_method="tok_threeDSecureRequired", confirm=True)[
            "status"
        ] == ("requires_action")
        refund = http.post("/v1/refunds", json={"payment_intent": succeeded["id"], "amount": 100})
        assert refund.status_code == 200, refund.text
        customer = http.post("/v1/customers", json={"email": "e2e@example.com"})
        assert customer.status_code == 200, customer.text
    return {
        "intents": intents,
        "refunds": [refund.json()["id"]],
        "customers": [customer.json()["id"]],
    }


def load_schema(server: LiveServer, ids: dict[str, list[str]]) -> schemathesis.BaseSchema:
    """The server's own /openapi.json. About half of the ids, tokens, currencies and amounts
    sent are real ones, so requests get past validation and reach the payment flows."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES},
            "dictionaries": {
                "intents": {"values": ids["intents"]},
                "refunds": {"values": ids["refunds"]},
                "customers": {"values": ids["customers"]},
                "tokens": {"values": TOKENS},
                "currencies": {"values": ["usd", "eur", "jpy"]},
                "amounts": {"values": [50, 1099, 2000, 99999999]},
            },
            "parameters": {
                "path.intent_id": {"dictionary": "intents", "probability": 0.5},
                "path.refund_id": {"dictionary": "refunds", "probability": 0.5},
                "path.customer_id": {"dictionary": "customers", "probability": 0.5},
                "query.starting_after": {"dictionary": "intents", "probability": 0.5},
                "body.payment_intent": {"dictionary": "intents", "probability": 0.5},
                "body.customer": {"dictionary": "customers", "probability": 0.5},
                "body.payment_method": {"dictionary": "tokens", "probability": 0.5},
                "body.currency": {"dictionary": "currencies", "probability": 0.5},
                "body.amount": {"dictionary": "amounts", "probability": 0.5},
                "body.amount_to_capture": {"dictionary": "amounts", "probability": 0.5},
            },
        }
    )
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", config=config)


def fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    base_url: str,
    auth: dict[str, str],
) -> None:
    """Up to MAX_EXAMPLES requests; raises (after shrinking) on the first failed check."""

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
    def run(case: Case[Any]) -> None:
        case.call_and_validate(base_url=base_url, headers=auth, checks=CHECKS, timeout=30)

    run()


# PostgreSQL only: the fuzzing is of the HTTP layer and its one error shape, which does not
# depend on the store; SQLite is under every other test, and the run is long.
@pytest.mark.parametrize("e2e_database_url", ["postgres"], indirect=True)
def test_api_conforms_to_its_openapi_document(live_server: LiveServer) -> None:
    schema = load_schema(live_server, seed(live_server))
    auth = {"Authorization": f"Bearer {live_server.secret_key}"}
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document is invalid: {result.err()}"
        operations.append(result.ok())
    labels = {operation.label for operation in operations}
    # The whole document: every route the API serves is in it, so all of them are fuzzed.
    assert {
        "GET /healthz",
        "POST /v1/customers",
        "GET /v1/customers/{customer_id}",
        "POST /v1/payment_intents",
        "GET /v1/payment_intents",
        "GET /v1/payment_intents/{intent_id}",
        "POST /v1/payment_intents/{intent_id}/confirm",
        "POST /v1/payment_intents/{intent_id}/capture",
        "POST /v1/payment_intents/{intent_id}/cancel",
        "POST /v1/refunds",
        "GET /v1/refunds/{refund_id}",
    } <= labels

    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, live_server.base_url, auth)
            except Unsatisfiable:
                # Nothing about this operation can be made invalid (e.g. GET /healthz).
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, FailureGroup) as exc:  # collect all operations' failures
                notes = "\n".join(getattr(exc, "__notes__", []))
                failures.append(f"{operation.label} ({mode.value} data):\n{exc}\n{notes}")
    assert not failures, "\n\n".join(failures) + "\n\nserver log:\n" + live_server.log.read_text()


NUL_REQUESTS = [
    ("POST", "/v1/customers", {"name": "a\u0000b"}),
    ("POST", "/v1/customers", {"metadata": {"k": "a\u0000"}}),
    ("POST", "/v1/customers", {"metadata": {"k\u0000": "v"}}),
    (
        "POST",
        "/v1/payment_intents",
        {"amount": 100, "currency": "usd", "payment_method": "t\u0000"},
    ),
    ("POST", "/v1/payment_intents", {"amount": 100, "currency": "usd", "customer": "cus_\u0000"}),
    ("POST", "/v1/refunds", {"payment_intent": "pi_\u0000"}),
    ("GET", "/v1/payment_intents/pi_%00", None),
    ("GET", "/v1/customers/cus_%00", None),
    ("GET", "/v1/refunds/re_%00", None),
    ("GET", "/v1/payment_intents?starting_after=pi_%00", None),
    ("POST", "/v1/payment_intents/pi_%00/confirm", None),
]


@pytest.mark.parametrize("e2e_database_url", ["postgres"], indirect=True)  # as above
def test_nul_characters_get_a_client_error(live_server: LiveServer) -> None:
    """What the fuzzer found: a NUL in a string is valid JSON but PostgreSQL cannot store it.
    It is refused with a 400 on every database alike, never a 5xx."""
    answers = []
    # Should a 500 slip through, the server drops the connection: one connection per request.
    with live_server.client(limits=httpx.Limits(max_keepalive_connections=0)) as http:
        for method, url, body in NUL_REQUESTS:
            response = http.request(method, url, json=body)
            answers.append((method, url, response.status_code, response.json()))
    for method, url, status, data in answers:
        assert status == 400, (method, url, data)
        assert data["error"]["type"] == "invalid_request_error", data
