"""Merchant webhooks over the real app, on SQLite and PostgreSQL: endpoints and their secrets
through the API, events from real payments reaching a real receiver (relay → stream → fan-out →
delivery loop) signed per Standard Webhooks, secret rotation, replay, and tenancy.

The receiver is a real HTTP server on 127.0.0.1 (tests/integration/webhook_receiver.py), hence
STRONGROOM_WEBHOOK_ALLOW_LOOPBACK for these tests; it verifies every request with the
`standardwebhooks` library."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.entrypoints import worker
from strongroom.entrypoints.api import create_app
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings
from tests.integration.webhook_receiver import Receiver, running_receiver
from tests.support import FakeClock, row_counts


@pytest.fixture
def settings(database_url: str, kms_url: str, reporting_url: str) -> Settings:
    return Settings(
        reporting_url=reporting_url,
        database_url=database_url,
        env="test",
        db_pool_size=20,
        kms_url=kms_url,
        webhook_allow_loopback=True,
    )


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[Receiver]:
    with running_receiver(monkeypatch, clock) as running:
        yield running


async def _client_for(container: Container, name: str, *, livemode: bool = False) -> str:
    merchant = await container.merchants.create_merchant(name)
    key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=livemode)
    return key.secret


@pytest.fixture
async def other_client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """A second merchant's client on the same app."""
    secret = await _client_for(container, "Globex")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container)),
        base_url="http://strongroom.test",
        headers={"Authorization": f"Bearer {secret}"},
    ) as http:
        yield http


async def _endpoint(
    client: httpx.AsyncClient, url: str, events: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    created = await client.post(
        "/v1/webhook_endpoints", json={"url": url, "enabled_events": events or ["*"], **extra}
    )
    assert created.status_code == 200, created.text
    body: dict[str, Any] = created.json()
    return body


async def _pay(client: httpx.AsyncClient, amount: int = 2000) -> dict[str, Any]:
    paid = await client.post(
        "/v1/payment_intents",
        json={"amount": amount, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "succeeded"
    body: dict[str, Any] = paid.json()
    return body


async def _deliver(container: Container) -> int:
    """What a worker pass does for webhooks: publish the outbox (the in-process stream runs the
    fan-out), then send what is due."""
    await container.relay.run_once()
    return await container.webhooks.deliver_due(100)


async def test_payment_events_reach_subscribed_endpoints_signed(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    everything = await _endpoint(client, receiver.url("/all"))
    succeeded_only = await _endpoint(
        client, receiver.url("/succeeded"), ["payment_intent.succeeded"]
    )
    refunds_only = await _endpoint(client, receiver.url("/refunds"), ["refund.created"])
    receiver.secrets = {
        "all": everything["secret"],
        "succeeded": succeeded_only["secret"],
        "refunds": refunds_only["secret"],
    }

    pi = await _pay(client)
    done = await worker.run_once(container)  # relay → stream → fan-out → delivery loop

    assert done["delivered"] == 3
    # Sent concurrently: order is not promised (as with any webhook sender), the set is.
    assert sorted(r.json()["type"] for r in receiver.at("/all")) == [
        "payment_intent.created",
        "payment_intent.succeeded",
    ]
    [succeeded] = receiver.at("/succeeded")
    assert receiver.at("/refunds") == []
    body = succeeded.json()
    assert body["type"] == "payment_intent.succeeded"
    assert body["object"] == "event"
    assert body["data"]["object"]["id"] == pi["id"]
    assert body["data"]["object"]["status"] == "succeeded"
    assert succeeded.webhook_id == body["id"]  # webhook-id is the event id
    assert succeeded.headers["content-type"] == "application/json"
    assert succeeded.headers["user-agent"].startswith("Strongroom-Webhooks/")
    # Each endpoint's deliveries verify with its own secret and no other.
    for request in receiver.received:
        assert request.verified_by == {request.path.strip("/")}, request

    deliveries = await client.get(f"/v1/webhook_endpoints/{succeeded_only['id']}/deliveries")
    [delivery] = deliveries.json()["data"]
    assert delivery["status"] == "succeeded"
    assert delivery["event"] == body["id"]
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [(200, None)]
    assert delivery["attempts"][0]["response_body"] == '{"received":true}'
    counted = container.metrics.registry.get_sample_value(
        "strongroom_webhook_deliveries_total", {"outcome": "succeeded"}
    )
    assert counted == 3


async def test_an_event_handed_over_again_is_not_delivered_again(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    endpoint = await _endpoint(client, receiver.url())
    receiver.secrets = {"current": endpoint["secret"]}
    await _pay(client)
    assert await _deliver(container) == 2

    # The stream is at least once: a relay that died before marking its events published
    # publishes them again, and the fan-out sees the same events a second time.
    async with container.uow.transaction() as tx:
        await tx.repo.conn.execute(t.outbox.update().values(published_at=None))
        await tx.commit()
    assert await container.relay.run_once() > 0

    assert await container.webhooks.deliver_due(100) == 0
    assert len(receiver.received) == 2
    assert await _count(container, t.webhook_deliveries) == 2


async def test_secret_is_shown_once_and_stored_only_sealed(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    created = await _endpoint(
        client,
        receiver.url(),
        ["payment_intent.succeeded"],
        description="orders",
        metadata={"a": "b"},
    )
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert created["status"] == "enabled"
    assert created["description"] == "orders"
    assert created["metadata"] == {"a": "b"}

    fetched = await client.get(f"/v1/webhook_endpoints/{created['id']}")
    listed = await client.get("/v1/webhook_endpoints")
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()
    assert fetched.json() == {k: v for k, v in created.items() if k != "secret"}
    assert [e["id"] for e in listed.json()["data"]] == [created["id"]]
    assert "secret" not in listed.json()["data"][0]
    assert secret not in fetched.text + listed.text

    # Nowhere in the database in clear, nor its key material on its own.
    raw = secret.removeprefix("whsec_")
    async with container.engines.read.connect() as conn:
        for table in t.metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                text = repr(tuple(row))
                assert raw not in text, table.name


async def test_bad_input_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    container.webhooks.allow_loopback = False  # as in production, for the loopback cases
    before = await row_counts(container.engines.write)
    bad_urls = [
        "ftp://example.com/hooks",
        "not a url",
        "https://user:password@example.com/hooks",
        "http://10.0.0.1/hooks",
        "http://169.254.169.254/latest",
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://[::1]/hooks",
    ]
    for url in bad_urls:
        response = await client.post(
            "/v1/webhook_endpoints", json={"url": url, "enabled_events": ["*"]}
        )
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "url", url
        assert error["request_id"]
    for events, param in [
        (["payment_intent.exploded"], "enabled_events"),
        (["*", "refund.created"], "enabled_events"),
        ([], "enabled_events"),
    ]:
        response = await client.post(
            "/v1/webhook_endpoints", json={"url": "https://example.com/h", "enabled_events": events}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    response = await client.post(
        "/v1/webhook_endpoints",
        json={"url": "https://example.com/h", "enabled_events": ["*"], "colour": "red"},
    )
    assert response.status_code == 400
    assert await row_counts(container.engines.write) == before

    # An update is checked the same way, and a refused one changes nothing.
    container.webhooks.allow_loopback = True
    endpoint = await _endpoint(client, receiver.url())
    refused = await client.post(
        f"/v1/webhook_endpoints/{endpoint['id']}", json={"url": "ftp://example.com/"}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "url"
    unchanged = await client.get(f"/v1/webhook_endpoints/{endpoint['id']}")
    assert unchanged.json()["url"] == receiver.url()
    too_long = await client.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", json={"expires_in": 86401}
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "expires_in"


async def test_live_endpoints_must_use_https(container: Container) -> None:
    secret = await _client_for(container, "Initech", livemode=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container)),
        base_url="http://strongroom.test",
        headers={"Authorization": f"Bearer {secret}"},
    ) as live:
        plain = await live.post(
            "/v1/webhook_endpoints",
            json={"url": "http://example.com/hooks", "enabled_events": ["*"]},
        )
        secure = await live.post(
            "/v1/webhook_endpoints",
            json={"url": "https://example.com/hooks", "enabled_events": ["*"]},
        )
    assert plain.status_code == 400
    assert plain.json()["error"]["param"] == "url"
    assert secure.status_code == 200
    assert secure.json()["livemode"] is True


async def test_another_merchants_endpoint_and_deliveries_are_not_found(
    client: httpx.AsyncClient,
    other_client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
) -> None:
    endpoint = await _endpoint(client, receiver.url())
    await _pay(client)
    await _deliver(container)
    [delivery] = (await client.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries")).json()[
        "data"
    ][:1]
    base = f"/v1/webhook_endpoints/{endpoint['id']}"
    attempts = [
        other_client.get(base),
        other_client.post(base, json={"description": "mine now"}),
        other_client.delete(base),
        other_client.post(f"{base}/rotate_secret"),
        other_client.get(f"{base}/deliveries"),
        other_client.get(f"/v1/webhook_deliveries/{delivery['id']}"),
        other_client.post(f"/v1/webhook_deliveries/{delivery['id']}/replay"),
    ]
    for pending in attempts:
        response = await pending
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "resource_missing"
    assert (await other_client.get("/v1/webhook_endpoints")).json()["data"] == []
    # Still the owner's, untouched.
    mine = await client.get(base)
    assert mine.status_code == 200
    assert mine.json()["description"] is None
    # Another merchant's payments are never sent to it.
    sent = len(receiver.received)
    await _pay(other_client)
    await _deliver(container)
    assert len(receiver.received) == sent


async def test_rotation_signs_with_both_secrets_until_the_old_expires(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, receiver: Receiver
) -> None:
    endpoint = await _endpoint(client, receiver.url(), ["payment_intent.created"])
    rotated = await client.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["secret"]
    assert new != endpoint["secret"]
    receiver.secrets = {"old": endpoint["secret"], "new": new}

    await _pay(client)
    await _deliver(container)
    [during] = receiver.received
    assert during.verified_by == {"old", "new"}  # either verifier alone accepts it
    assert len(during.headers["webhook-signature"].split(" ")) == 2

    clock.advance(hours=24, seconds=1)  # the old secret's grace is over
    await _pay(client)
    await _deliver(container)
    after = receiver.received[-1]
    assert after.verified_by == {"new"}
    assert len(after.headers["webhook-signature"].split(" ")) == 1

    # expires_in=0 retires the current secret at once.
    newest = await client.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", json={"expires_in": 0}
    )
    receiver.secrets["newest"] = newest.json()["secret"]
    await _pay(client)
    await _deliver(container)
    assert receiver.received[-1].verified_by == {"newest"}
    assert all(r.verified_by for r in receiver.received)


async def test_replay_sends_again_with_the_same_webhook_id(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, receiver: Receiver
) -> None:
    endpoint = await _endpoint(client, receiver.url(), ["payment_intent.succeeded"])
    receiver.secrets = {"current": endpoint["secret"]}
    await _pay(client)
    await _deliver(container)
    [delivery] = (await client.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries")).json()[
        "data"
    ]

    clock.advance(minutes=3)
    replayed = await client.post(f"/v1/webhook_deliveries/{delivery['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "pending"
    assert await container.webhooks.deliver_due(100) == 1

    first, second = receiver.received
    assert first.webhook_id == second.webhook_id == delivery["event"]
    assert first.body == second.body
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 180
    assert second.verified_by == {"current"}
    fetched = (await client.get(f"/v1/webhook_deliveries/{delivery['id']}")).json()
    assert fetched["status"] == "succeeded"
    assert fetched["attempt_count"] == 2
    assert [a["status_code"] for a in fetched["attempts"]] == [200, 200]

    # A disabled endpoint's deliveries are not replayed.
    await client.post(f"/v1/webhook_endpoints/{endpoint['id']}", json={"disabled": True})
    refused = await client.post(f"/v1/webhook_deliveries/{delivery['id']}/replay")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "webhook_endpoint_disabled"


async def test_disabled_endpoints_get_nothing_until_re_enabled(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    endpoint = await _endpoint(client, receiver.url(), ["payment_intent.created"])
    receiver.secrets = {"current": endpoint["secret"]}
    base = f"/v1/webhook_endpoints/{endpoint['id']}"

    # An event fanned out while enabled, then the endpoint disabled before it is sent: it waits.
    await _pay(client)
    await container.relay.run_once()
    disabled = await client.post(base, json={"disabled": True})
    assert disabled.json()["status"] == "disabled"
    assert disabled.json()["disabled_reason"] == "requested"
    await _pay(client)  # fanned out while disabled: no delivery at all
    assert await _deliver(container) == 0
    assert receiver.received == []

    enabled = await client.post(
        base,
        json={"disabled": False, "enabled_events": ["payment_intent.created", "refund.created"]},
    )
    assert enabled.json()["status"] == "enabled"
    assert enabled.json()["disabled_reason"] is None
    assert enabled.json()["enabled_events"] == ["payment_intent.created", "refund.created"]
    assert await _deliver(container) == 1  # the one that waited
    assert len(receiver.received) == 1


async def test_list_pages_and_delete(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, receiver: Receiver
) -> None:
    ids = []
    for n in range(3):
        ids.append((await _endpoint(client, receiver.url(f"/{n}")))["id"])
        clock.advance(seconds=1)
    first = (await client.get("/v1/webhook_endpoints", params={"limit": 2})).json()
    assert [e["id"] for e in first["data"]] == [ids[2], ids[1]]
    assert first["has_more"] is True
    rest = (
        await client.get("/v1/webhook_endpoints", params={"limit": 2, "starting_after": ids[1]})
    ).json()
    assert [e["id"] for e in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False

    await _pay(client)
    await _deliver(container)
    deleted = await client.delete(f"/v1/webhook_endpoints/{ids[0]}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": ids[0], "object": "webhook_endpoint", "deleted": True}
    assert (await client.get(f"/v1/webhook_endpoints/{ids[0]}")).status_code == 404
    assert (await client.delete(f"/v1/webhook_endpoints/{ids[0]}")).status_code == 404
    async with container.uow.reading() as repo:
        left = await repo.conn.execute(
            select(func.count()).where(t.webhook_deliveries.c.endpoint_id == ids[0])
        )
        assert left.scalar_one() == 0
    assert await _count(container, t.webhook_deliveries) == 4  # two endpoints x two events


async def _count(container: Container, table: Any) -> int:
    async with container.uow.reading() as repo:
        return int((await repo.conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_endpoint_changes_are_audited_without_the_secret(
    client: httpx.AsyncClient, receiver: Receiver, container: Container
) -> None:
    endpoint = await _endpoint(client, receiver.url())
    await client.post(f"/v1/webhook_endpoints/{endpoint['id']}", json={"disabled": True})
    rotated = await client.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret")
    await client.delete(f"/v1/webhook_endpoints/{endpoint['id']}")

    listed = await client.get("/v1/audit/events", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    ours = [e for e in listed.json()["data"] if (e["resource"] or {}).get("id") == endpoint["id"]]
    assert [e["type"] for e in reversed(ours)] == [
        "api:webhook_endpoint:create",
        "api:webhook_endpoint:update",
        "api:webhook_endpoint:rotate_secret",
        "api:webhook_endpoint:delete",
    ]
    assert ours[-1]["details"] == {
        "url": endpoint["url"],
        "authorization": {  # the policy's decision on the request, and which policy decided
            "action": "webhook_endpoints.write",
            "decision": "allow",
            "reason": "Allowed by full secret key.",
            "policy": container.authz.policy.bundle_hash,
        },
    }
    assert all(e["actor"]["type"] == "api_key" for e in ours)
    page = listed.text
    assert endpoint["secret"] not in page
    assert rotated.json()["secret"] not in page
