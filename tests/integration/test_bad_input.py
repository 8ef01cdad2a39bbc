"""Bad input gets a 4xx in the one error shape and writes nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Container, bootstrap
from strongroom.domain.errors import AuthenticationError
from strongroom.entrypoints.api import create_app
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings
from tests.support import FakeClock, row_counts

VALID = {"amount": 2000, "currency": "usd", "payment_method": "tok_visa", "confirm": True}
ERROR_FIELDS = {"type", "code", "message", "param", "request_id"}


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= ERROR_FIELDS
    assert error["code"] == code
    assert error["request_id"] == response.headers["Request-Id"]
    assert "Traceback" not in response.text
    return dict(error)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({**VALID, "amount": "2000"}, "parameter_invalid_integer", "amount"),
        ({**VALID, "amount": 20.5}, "parameter_invalid_integer", "amount"),
        ({**VALID, "amount": True}, "parameter_invalid_integer", "amount"),
        ({**VALID, "amount": -1}, "amount_too_small", "amount"),
        ({**VALID, "amount": 0}, "amount_too_small", "amount"),
        ({**VALID, "amount": 100_000_000}, "amount_too_large", "amount"),
        ({**VALID, "currency": "xyz"}, "invalid_currency", "currency"),
        ({**VALID, "currency": "us"}, "parameter_invalid", "currency"),
        ({**VALID, "customer": "cus_missing"}, "resource_missing", "customer"),
        ({**VALID, "capture_method": "later"}, "parameter_invalid", "capture_method"),
        ({**VALID, "confirm": "yes"}, "parameter_invalid_boolean", "confirm"),
        ({**VALID, "surprise": 1}, "parameter_unknown", "surprise"),
        ({**VALID, "metadata": {"k": 1}}, "parameter_invalid", "metadata[k]"),
        ({"currency": "usd"}, "parameter_missing", "amount"),
    ],
)
async def test_invalid_payment_intents_are_refused_and_write_nothing(
    client: httpx.AsyncClient, container: Container, body: dict[str, Any], code: str, param: str
) -> None:
    before = await row_counts(container.engines.write)

    response = await client.post(
        "/v1/payment_intents", json=body, headers={"Idempotency-Key": "bad-1"}
    )

    error = assert_error_shape(response, 400, code)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert await row_counts(container.engines.write) == before


@pytest.mark.parametrize(
    "raw",
    [b'{"amount": 2000,', b"not json", b"[1, 2]", b'"a string"', b""],
)
async def test_malformed_json_is_refused(
    client: httpx.AsyncClient, container: Container, raw: bytes
) -> None:
    before = await row_counts(container.engines.write)
    response = await client.post(
        "/v1/payment_intents", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_error_shape(response, 400, response.json()["error"]["code"])
    assert await row_counts(container.engines.write) == before


async def test_a_body_over_one_megabyte_is_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    before = await row_counts(container.engines.write)
    huge = b'{"amount": 1, "currency": "usd", "metadata": {"a": "' + b"x" * 1_048_576 + b'"}}'

    response = await client.post(
        "/v1/payment_intents", content=huge, headers={"Content-Type": "application/json"}
    )

    assert_error_shape(response, 413, "request_too_large")
    assert await row_counts(container.engines.write) == before


async def test_a_body_of_exactly_the_limit_is_read(
    client: httpx.AsyncClient, container: Container
) -> None:
    """The cap is on size, not on the request: a body at the limit gets parsed (and here,
    refused for its content rather than its size)."""
    filler = b" " * (container.settings.max_body_bytes - 2)
    response = await client.post(
        "/v1/customers", content=b"{" + filler + b"}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200


async def test_refund_errors(client: httpx.AsyncClient, container: Container) -> None:
    pending = await client.post("/v1/payment_intents", json={"amount": 500, "currency": "usd"})
    before = await row_counts(container.engines.write)

    missing = await client.post("/v1/refunds", json={"payment_intent": "pi_nope"})
    not_paid = await client.post("/v1/refunds", json={"payment_intent": pending.json()["id"]})

    assert_error_shape(missing, 400, "resource_missing")
    assert missing.json()["error"]["param"] == "payment_intent"
    error = assert_error_shape(not_paid, 409, "payment_intent_unexpected_state")
    assert "requires_payment_method" in error["message"]
    assert await row_counts(container.engines.write) == before


async def test_illegal_transitions_are_409_naming_the_current_status(
    client: httpx.AsyncClient,
) -> None:
    paid = (await client.post("/v1/payment_intents", json=VALID)).json()
    for action in ("confirm", "capture", "cancel"):
        response = await client.post(f"/v1/payment_intents/{paid['id']}/{action}")
        error = assert_error_shape(response, 409, "payment_intent_unexpected_state")
        assert "succeeded" in error["message"]


async def test_unknown_objects_are_404(client: httpx.AsyncClient) -> None:
    for path in ("/v1/payment_intents/pi_nope", "/v1/refunds/re_nope", "/v1/customers/cus_no"):
        assert_error_shape(await client.get(path), 404, "resource_missing")
    assert_error_shape(
        await client.post("/v1/payment_intents/pi_nope/capture"), 404, "resource_missing"
    )
    assert_error_shape(await client.get("/v1/nothing-here"), 404, "resource_missing")


async def test_authentication_and_permission(
    client: httpx.AsyncClient, container: Container
) -> None:
    merchant = await container.merchants.find_by_name("Acme")
    assert merchant is not None
    publishable = await container.merchants.create_key(
        merchant.id, KeyKind.PUBLISHABLE, livemode=False
    )
    revoked = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    await container.merchants.revoke_key(revoked.id)

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    no_key = await client.get("/v1/payment_intents", headers={"Authorization": ""})
    assert_error_shape(no_key, 401, "api_key_invalid")
    unknown = await client.get("/v1/payment_intents", headers=bearer("sk_test_unknown"))
    assert_error_shape(unknown, 401, "api_key_invalid")
    gone = await client.get("/v1/payment_intents", headers=bearer(revoked.secret))
    assert_error_shape(gone, 401, "api_key_invalid")
    pk = await client.post("/v1/payment_intents", json=VALID, headers=bearer(publishable.secret))
    assert_error_shape(pk, 403, "permission_denied")


async def test_merchants_cannot_see_each_others_objects(
    client: httpx.AsyncClient, container: Container
) -> None:
    mine = (await client.post("/v1/payment_intents", json=VALID)).json()
    other = await container.merchants.create_merchant("Other")
    key = await container.merchants.create_key(other.id, KeyKind.SECRET, livemode=False)
    theirs = {"Authorization": f"Bearer {key.secret}"}

    assert (
        await client.get(f"/v1/payment_intents/{mine['id']}", headers=theirs)
    ).status_code == 404
    refund = await client.post("/v1/refunds", json={"payment_intent": mine["id"]}, headers=theirs)
    assert refund.status_code == 400
    listing = await client.get("/v1/payment_intents", headers=theirs)
    assert listing.json()["data"] == []


async def test_list_pages_newest_first_with_a_cursor(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    ids = []
    for amount in range(100, 105):
        clock.advance(seconds=1)
        created = await client.post(
            "/v1/payment_intents", json={"amount": amount, "currency": "usd"}
        )
        ids.append(created.json()["id"])

    first = (await client.get("/v1/payment_intents", params={"limit": 2})).json()
    second = (
        await client.get("/v1/payment_intents", params={"limit": 2, "starting_after": ids[3]})
    ).json()
    last = (
        await client.get("/v1/payment_intents", params={"limit": 2, "starting_after": ids[1]})
    ).json()

    assert [pi["id"] for pi in first["data"]] == [ids[4], ids[3]]
    assert first["has_more"] is True
    assert [pi["id"] for pi in second["data"]] == [ids[2], ids[1]]
    assert [pi["id"] for pi in last["data"]] == [ids[0]]
    assert last["has_more"] is False
    bad = await client.get("/v1/payment_intents", params={"starting_after": "pi_nope"})
    assert_error_shape(bad, 400, "resource_missing")
    too_many = await client.get("/v1/payment_intents", params={"limit": 101})
    assert_error_shape(too_many, 400, "parameter_invalid")


async def test_a_key_revoked_in_this_process_stops_working_at_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    merchant = await container.merchants.create_merchant("Cached")
    key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    headers = {"Authorization": f"Bearer {key.secret}"}
    assert (await client.get("/v1/payment_intents", headers=headers)).status_code == 200

    await container.merchants.revoke_key(key.id)

    assert (await client.get("/v1/payment_intents", headers=headers)).status_code == 401


async def test_with_the_key_cache_off_a_revocation_elsewhere_applies_at_once(
    settings: Settings, clock: FakeClock
) -> None:
    uncached = bootstrap(settings.model_copy(update={"api_key_cache_seconds": 0}), clock=clock)
    try:
        merchant = await uncached.merchants.create_merchant("Uncached")
        key = await uncached.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
        await uncached.merchants.authenticate(key.secret)
        # Revoked behind this process's back, as another process would.
        async with uncached.uow.transaction() as tx:
            await tx.repo.revoke_api_key(key.id, clock.now())
            await tx.commit()
        with pytest.raises(AuthenticationError):
            await uncached.merchants.authenticate(key.secret)
    finally:
        await uncached.aclose()


async def test_an_overlong_id_in_the_path_is_a_400_not_a_500(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/payment_intents/pi_" + "x" * 252 + "/confirm", headers={"Idempotency-Key": "long"}
    )
    assert_error_shape(response, 400, "parameter_invalid")


async def test_a_missing_body_says_so(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/payment_intents")
    error = assert_error_shape(response, 400, "parameter_missing")
    assert error["message"] == "The request body is required."


async def test_an_unknown_token_is_not_echoed_back(client: httpx.AsyncClient) -> None:
    """Tokens are secrets of a kind too. (A card number never gets this far: the PAN guard
    refuses it, see test_pan_guard.py.)"""
    token = "tok_1NqZbW2eZvKYlo2C5vT8xYzQ"
    response = await client.post(
        "/v1/payment_intents",
        json={"amount": 100, "currency": "usd", "payment_method": token, "confirm": True},
    )
    assert response.status_code == 402
    assert token not in response.text


async def test_an_unexpected_error_is_a_500_in_the_error_shape_with_a_request_id(
    container: Container, secret_key: str
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    container.payments.get_payment_intent = broken  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get(
            "/v1/payment_intents/pi_x", headers={"Authorization": f"Bearer {secret_key}"}
        )

    assert_error_shape(response, 500, "internal_error")
    assert "a bug" not in response.text


async def test_test_keys_and_live_keys_see_separate_worlds(
    client: httpx.AsyncClient, container: Container
) -> None:
    merchant = await container.merchants.find_by_name("Acme")
    assert merchant is not None
    live_key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=True)
    live = {"Authorization": f"Bearer {live_key.secret}"}
    paid = await client.post("/v1/payment_intents", json=VALID, headers=live)
    customer = await client.post("/v1/customers", headers=live)
    pi_id = paid.json()["id"]
    assert paid.json()["livemode"] is True

    # The test key (the client's default) can neither see nor touch live objects.
    assert (await client.get(f"/v1/payment_intents/{pi_id}")).status_code == 404
    assert (await client.get(f"/v1/customers/{customer.json()['id']}")).status_code == 404
    assert (await client.get("/v1/payment_intents")).json()["data"] == []
    assert (await client.post(f"/v1/payment_intents/{pi_id}/cancel")).status_code == 404
    refund = await client.post("/v1/refunds", json={"payment_intent": pi_id})
    assert_error_shape(refund, 400, "resource_missing")
    attach = await client.post(
        "/v1/payment_intents",
        json={"amount": 100, "currency": "usd", "customer": customer.json()["id"]},
    )
    assert_error_shape(attach, 400, "resource_missing")

    # The live key can refund it, and the refund is live-only too.
    live_refund = await client.post("/v1/refunds", json={"payment_intent": pi_id}, headers=live)
    assert live_refund.status_code == 200
    assert (await client.get(f"/v1/refunds/{live_refund.json()['id']}")).status_code == 404


async def test_an_idempotency_key_used_in_test_mode_is_free_in_live_mode(
    client: httpx.AsyncClient, container: Container
) -> None:
    merchant = await container.merchants.find_by_name("Acme")
    assert merchant is not None
    live_key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=True)
    headers = {"Idempotency-Key": "order-1"}

    in_test = await client.post("/v1/payment_intents", json=VALID, headers=headers)
    in_live = await client.post(
        "/v1/payment_intents",
        json=VALID,
        headers={**headers, "Authorization": f"Bearer {live_key.secret}"},
    )

    assert in_live.status_code == 200
    assert "Idempotent-Replayed" not in in_live.headers
    assert in_live.json()["livemode"] is True
    assert in_live.json()["id"] != in_test.json()["id"]
