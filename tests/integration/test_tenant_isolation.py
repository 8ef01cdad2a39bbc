"""Tenant isolation and the policy's coverage, from the application's own route table (so a new
route is covered, or fails here, without anyone remembering to add it):

- every route names a policy action the policy knows, or is listed below as needing none, with
  the reason; and calling it makes the policy decide exactly that action;
- every /v1 route, called with merchant B's key on merchant A's object ids, answers 404 (never
  the object), and no answer to B contains any of A's ids;
- no request may set a field the server owns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from strongroom.bootstrap import Container
from strongroom.domain.authorization import PolicyAnswer
from strongroom.entrypoints.api.app import create_app
from strongroom.entrypoints.api.deps import ACTION
from strongroom.service_layer.merchants import KeyKind

POLICY_DATA = Path(__file__).parents[2] / "src" / "strongroom" / "policies" / "data.json"

# Routes that ask no policy, and why. Anything else must name an action.
NO_ACTION = {
    "/healthz": "liveness, no data",
    "/readyz": "readiness, no data",
    "/metrics": "its own bearer token (STRONGROOM_METRICS_TOKEN); host-level figures",
    "/openapi.json": "the public schema",
    "/docs": "the public schema",
    "/docs/oauth2-redirect": "the public schema",
    "/redoc": "the public schema",
    "/v1/webhooks/{provider}/{endpoint_id}": "authenticated by the gateway's signature",
    "/v1/webhooks/plaid": "authenticated by Plaid's signed JWT",
    "/sandbox/3ds/{charge_id}": "the sandbox's stand-in for a bank's challenge page",
    "/sandbox/3ds/{charge_id}/{outcome}": "the sandbox's stand-in for a bank's challenge page",
    "/sandbox/fields": "the hosted card fields; tokenizing asks the policy (tokens.create)",
    "/demo/checkout": "the demo page; its payments go through the API's routes",
    "/demo/checkout/pay": "the demo page; its payments go through the API's routes",
    "/demo/checkout/confirm": "the demo page; its payments go through the API's routes",
    "/oauth/token": "authenticated by the refresh token itself",
    "/v1/operator": "says only who the access token acts for",
    "/console": "the operator's own home page",
    "/console/sign-in": "signing in",
    "/console/sign-out": "the operator's own session",
    "/console/second-factor": "signing in",
    "/console/totp": "the operator's own second factor",
    "/console/password": "the operator's own password",
    "/console/sessions/{session_id}/revoke": "the operator's own sessions only",
    "/console/security-keys": "the operator's own security keys",
    "/console/webauthn/register/options": "the operator's own security keys",
    "/console/webauthn/register": "the operator's own security keys",
    "/console/webauthn/authenticate/options": "signing in",
    "/console/webauthn/authenticate": "signing in",
    "/console/app-tokens": "tokens acting for the operator themself",
    "/console/invitations/{token}": "authenticated by the invitation's single-use token",
}


def routes(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, openapi_extra) for every route the application serves."""
    found = []
    for entry in app.routes:
        contexts = (
            entry.effective_route_contexts() if hasattr(entry, "effective_route_contexts") else []
        )
        for context in contexts or [entry]:
            route = getattr(context, "original_route", context)
            for method in sorted(getattr(context, "methods", None) or ()):
                if method != "HEAD":
                    found.append(
                        (method, context.path, getattr(route, "openapi_extra", None) or {})
                    )
    return found


class Recording:
    """The real policy, remembering which actions it was asked about."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.bundle_hash = policy.bundle_hash
        self.actions: list[str] = []

    def decide(self, input_: Mapping[str, Any]) -> PolicyAnswer:
        self.actions.append(str(input_.get("action")))
        answer: PolicyAnswer = self.policy.decide(input_)
        return answer


def test_every_route_names_a_known_action_or_why_it_needs_none(container: Container) -> None:
    known = set(json.loads(POLICY_DATA.read_text())["strongroom"]["actions"])
    table = routes(create_app(container))
    assert len(table) > 60
    for method, path, extra in table:
        action = extra.get(ACTION)
        if action is None:
            assert path in NO_ACTION, f"{method} {path} names no policy action"
        else:
            assert path not in NO_ACTION, f"{method} {path} both names an action and is exempt"
            assert action in known, f"{method} {path}: the policy has no action {action!r}"


# --- the cross-tenant matrix ----------------------------------------------------------------------


async def _merchant_key(container: Container, name: str) -> str:
    merchant = await container.merchants.create_merchant(name)
    return (
        await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    ).secret


async def _objects_of_a(container: Container, a: httpx.AsyncClient) -> dict[str, str]:
    """One of each of merchant A's objects, by the path parameter that names it."""
    customer = (await a.post("/v1/customers", json={"email": "a@example.com"})).json()
    endpoint = (
        await a.post(
            "/v1/webhook_endpoints", json={"url": "https://example.com/a", "enabled_events": ["*"]}
        )
    ).json()
    pi = (
        await a.post(
            "/v1/payment_intents",
            json={
                "amount": 5000,
                "currency": "usd",
                "customer": customer["id"],
                "payment_method": "tok_visa",
                "confirm": True,
            },
        )
    ).json()
    refund = (await a.post("/v1/refunds", json={"payment_intent": pi["id"], "amount": 100})).json()
    account = (await a.post("/v1/gateway_accounts", json={"provider": "sandbox"})).json()
    bank_account = (
        await a.post("/v1/bank_accounts", json={"public_token": "public-sandbox-manual"})
    ).json()
    while await container.relay.run_once():  # the endpoint's deliveries
        pass
    await container.sequencer.run_once()  # A's audit events in the tree: proofs exist
    deliveries = (await a.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries")).json()
    events = (await a.get("/v1/audit/events", params={"limit": 1})).json()
    ids = {
        "intent_id": pi["id"],
        "refund_id": refund["id"],
        "customer_id": customer["id"],
        "endpoint_id": endpoint["id"],
        "delivery_id": deliveries["data"][0]["id"],
        "account_id": account["id"],
        "bank_account_id": bank_account["id"],
        "event_id": events["data"][0]["id"],
    }
    assert all(re.fullmatch(r"[a-z]+_\w+", v) for v in ids.values()), ids
    return ids


# Bodies for routes whose body names A's objects (B must get 404 for those too).
def _body(method: str, path: str, ids: dict[str, str]) -> dict[str, Any] | None:
    if method in ("GET", "DELETE"):
        return None
    return {
        "/v1/refunds": {"payment_intent": ids["intent_id"]},
        "/v1/payment_intents": {"amount": 100, "currency": "usd", "customer": ids["customer_id"]},
        "/v1/bank_accounts": {
            "public_token": "public-sandbox-instant-b",
            "customer": ids["customer_id"],
        },
        "/v1/bank_accounts/{bank_account_id}/verify": {"amounts": [1, 2]},
    }.get(path, {})


async def test_merchant_b_never_reaches_merchant_a_s_objects(container: Container) -> None:
    app = create_app(container)
    recording = Recording(container.authz.policy)
    container.authz.policy = recording
    transport = httpx.ASGITransport(app=app)
    base = "http://strongroom.test"
    key_a, key_b = await _merchant_key(container, "A"), await _merchant_key(container, "B")
    merchant_b = (await container.merchants.authenticate(key_b)).caller.merchant_id
    publishable_b = await container.merchants.create_key(
        merchant_b, KeyKind.PUBLISHABLE, livemode=False
    )
    async with (
        httpx.AsyncClient(transport=transport, base_url=base, headers=_bearer(key_a)) as a,
        httpx.AsyncClient(transport=transport, base_url=base, headers=_bearer(key_b)) as b,
    ):
        ids = await _objects_of_a(container, a)
        checked = 0
        for method, path, extra in routes(app):
            if not path.startswith("/v1/") or path in NO_ACTION:
                continue
            params = re.findall(r"{(\w+)}", path)
            url = path.format(**{p: ids.get(p, "volume") for p in params})
            body = _body(method, path, ids)
            recording.actions.clear()
            # Cards are tokenized with a publishable key; a secret one is refused before.
            headers = _bearer(publishable_b.secret) if path == "/v1/tokens" else None
            answer = await b.request(method, url, json=body, headers=headers)
            where = f"{method} {path}"
            assert extra[ACTION] in recording.actions, f"{where} did not ask the policy"
            text, sent = answer.text, url + json.dumps(body)
            leaked = [v for v in ids.values() if v in text and v not in sent]  # echoes are fine
            assert not leaked, f"{where} showed A's objects: {text}"
            if params and params != ["name"]:
                assert answer.status_code == 404, f"{where}: {answer.status_code} {text}"
                assert answer.json()["error"]["code"] == "resource_missing"
            elif (path, method) in _REFERENCING:
                # A's object named in the body: as Stripe, 400 resource_missing on that param.
                assert answer.status_code == 400, f"{where}: {answer.status_code} {text}"
                assert answer.json()["error"]["code"] == "resource_missing"
            elif params == ["name"]:
                assert answer.json()["rows"] == [], f"{where} showed A's figures"
            checked += 1
        assert checked >= 30


_REFERENCING = {
    ("/v1/refunds", "POST"),
    ("/v1/payment_intents", "POST"),
    ("/v1/bank_accounts", "POST"),
}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- server-owned fields --------------------------------------------------------------------------

SERVER_OWNED = ("merchant", "status", "amount_refunded", "livemode")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/payment_intents", {"amount": 100, "currency": "usd"}),
        ("/v1/customers", {"email": "x@example.com"}),
        ("/v1/webhook_endpoints", {"url": "https://example.com/h", "enabled_events": ["*"]}),
        ("/v1/gateway_accounts", {"provider": "sandbox"}),
        ("/v1/bank_accounts", {"public_token": "public-sandbox-instant"}),
    ],
)
async def test_a_request_may_not_set_a_server_owned_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    for field in SERVER_OWNED:
        answer = await client.post(path, json=body | {field: "x"})
        assert answer.status_code == 400, (path, field, answer.text)
        error = answer.json()["error"]
        assert error["param"] == field
        assert "set by Strongroom" in error["message"]
    listed = await client.get("/v1/payment_intents")
    assert listed.json()["data"] == [], "nothing was written"
