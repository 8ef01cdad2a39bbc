"""GET /metrics over the real app, on SQLite and PostgreSQL: request latency by route template,
payment intents by status and the outbox backlog read from the database at scrape time, the
optional bearer token, and the helpers other modules count through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import func, select

from strongroom.adapters.db import tables as t
from strongroom.adapters.observability import BreakerState, Metrics
from strongroom.bootstrap import Container, bootstrap
from strongroom.entrypoints.api import create_app
from strongroom.settings import Settings
from tests.support import FakeClock

TOKEN = "metrics-scrape-token-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def create_intent(client: httpx.AsyncClient, **params: object) -> dict[str, object]:
    response = await client.post(
        "/v1/payment_intents", json={"amount": 1500, "currency": "usd", **params}
    )
    assert response.status_code in (200, 402), response.text
    body: dict[str, object] = response.json()
    return body


async def test_request_latency_is_labelled_by_route_template_not_path(
    client: httpx.AsyncClient,
) -> None:
    created = await create_intent(client)
    fetched = await client.get(f"/v1/payment_intents/{created['id']}")
    assert fetched.status_code == 200
    missing = await client.get("/v1/payment_intents/pi_doesnotexist")
    assert missing.status_code == 404

    text = await scrape(client)

    count = "strongroom_http_request_duration_seconds_count"
    template = "/v1/payment_intents/{intent_id}"
    assert value(text, count, method="GET", route=template, status_class="2xx") == 1
    assert value(text, count, method="GET", route=template, status_class="4xx") == 1
    assert value(text, count, method="POST", route="/v1/payment_intents", status_class="2xx") == 1
    assert (
        value(
            text,
            "strongroom_http_request_duration_seconds_bucket",
            method="GET",
            route=template,
            status_class="2xx",
            le="+Inf",
        )
        == 1
    )
    # No raw path, so no id, ever becomes a label.
    assert str(created["id"]) not in text
    assert "pi_doesnotexist" not in text


async def test_unmatched_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for path in ("/wp-admin/a1", "/wp-admin/b2"):
        assert (await client.get(path)).status_code == 404

    text = await scrape(client)

    count = "strongroom_http_request_duration_seconds_count"
    assert value(text, count, method="GET", route="unmatched", status_class="4xx") == 2
    assert "wp-admin" not in text


async def test_payment_intents_by_status_match_what_was_created(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(2):
        await create_intent(client, payment_method="tok_visa", confirm=True)
    await create_intent(client, payment_method="tok_visa", capture_method="manual", confirm=True)
    await create_intent(client, payment_method="tok_chargeDeclined", confirm=True)
    await create_intent(client)
    canceled = await create_intent(client)
    assert (await client.post(f"/v1/payment_intents/{canceled['id']}/cancel")).status_code == 200

    text = await scrape(client)

    by_status = {
        dict(labels)["status"]: n
        for (name, labels), n in samples(text).items()
        if name == "strongroom_payment_intents" and dict(labels)["livemode"] == "false"
    }
    assert by_status == {
        "requires_payment_method": 2,  # the declined one and the one never given a card
        "requires_confirmation": 0,
        "requires_action": 0,
        "processing": 0,
        "requires_capture": 1,
        "succeeded": 2,
        "canceled": 1,
    }
    assert value(text, "strongroom_payment_intents", status="succeeded", livemode="true") == 0


async def test_outbox_backlog_is_what_waits_then_zero_once_the_relay_has_run(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create_intent(client, payment_method="tok_visa", confirm=True)
    await create_intent(client)
    async with container.engines.read.connect() as conn:
        waiting = (
            await conn.execute(
                select(func.count()).select_from(t.outbox).where(t.outbox.c.published_at.is_(None))
            )
        ).scalar_one()
    assert waiting >= 3  # created + succeeded, created
    clock.advance(seconds=90)

    before = await scrape(client)
    assert value(before, "strongroom_outbox_unpublished_events") == waiting
    assert value(before, "strongroom_outbox_oldest_unpublished_age_seconds") == 90
    assert value(before, "strongroom_metrics_source_up", source="database") == 1

    assert await container.relay.run_once() == waiting

    after = await scrape(client)
    assert value(after, "strongroom_outbox_unpublished_events") == 0
    assert value(after, "strongroom_outbox_oldest_unpublished_age_seconds") == 0


@pytest.fixture
async def guarded(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """A client (with no credentials of its own) of an app whose /metrics needs TOKEN."""
    built = bootstrap(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}), clock=clock)
    try:
        transport = httpx.ASGITransport(app=create_app(built))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http
    finally:
        await built.aclose()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
)
async def test_a_set_token_is_required(
    guarded: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await guarded.get("/metrics", headers=headers)

    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "metrics_token_invalid")
    assert "strongroom_" not in response.text


async def test_the_right_token_gets_the_metrics(guarded: httpx.AsyncClient) -> None:
    response = await guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    assert value(response.text, "strongroom_metrics_source_up", source="database") == 1


async def test_metrics_is_not_in_the_api_documentation(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/metrics" not in paths
    assert "/v1/payment_intents" in paths  # the documented API is still there


async def test_projection_lag_is_reported_and_a_broken_source_does_not_fail_the_scrape(
    container: Container, clock: FakeClock
) -> None:
    container.metrics.record_rate_limit_refusal("ip.login")

    def broken() -> float:
        raise ConnectionError("reporting store down")

    async def lagging() -> timedelta:
        return timedelta(seconds=42)

    reported = (
        await container.metrics.exposition(
            container.engines.read, clock.now(), projection_lag=lagging
        )
    ).decode()
    down = (
        await container.metrics.exposition(
            container.engines.read, clock.now(), projection_lag=broken
        )
    ).decode()

    assert value(reported, "strongroom_projection_lag_seconds") == 42
    assert value(reported, "strongroom_metrics_source_up", source="projection") == 1
    assert value(down, "strongroom_projection_lag_seconds") is None
    assert value(down, "strongroom_metrics_source_up", source="projection") == 0
    # The rest of the page is still there.
    assert value(down, "strongroom_metrics_source_up", source="database") == 1
    assert value(down, "strongroom_rate_limit_refusals_total", limiter="ip.login") == 1


async def test_an_unreachable_database_leaves_its_state_out_but_answers(
    reporting_url: str,
) -> None:
    # Nothing listens on loopback port 1: the connection is refused at once.
    built = bootstrap(
        Settings(
            database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none",
            reporting_url=reporting_url,
        )
    )
    try:
        transport = httpx.ASGITransport(app=create_app(built))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/metrics")
    finally:
        await built.aclose()

    assert response.status_code == 200
    assert value(response.text, "strongroom_metrics_source_up", source="database") == 0
    assert value(response.text, "strongroom_outbox_unpublished_events") is None


def test_helpers_count_into_their_own_containers_registry() -> None:
    metrics, other = Metrics(), Metrics()
    metrics.record_webhook_delivery("succeeded")
    metrics.record_webhook_delivery("succeeded")
    metrics.record_webhook_delivery("timeout")
    metrics.record_rate_limit_refusal("ip.login")
    metrics.set_breaker_state("stripe", BreakerState.OPEN)
    metrics.set_breaker_state("stripe", BreakerState.HALF_OPEN)

    text = generate_latest(metrics.registry).decode()
    deliveries = "strongroom_webhook_deliveries_total"
    assert value(text, deliveries, outcome="succeeded") == 2
    assert value(text, deliveries, outcome="timeout") == 1
    assert value(text, "strongroom_rate_limit_refusals_total", limiter="ip.login") == 1
    breaker = "strongroom_gateway_breaker_state"
    assert value(text, breaker, gateway="stripe", state="half_open") == 1
    assert value(text, breaker, gateway="stripe", state="open") == 0
    assert value(text, breaker, gateway="stripe", state="closed") == 0
    # Nothing leaks into another container's registry.
    assert value(generate_latest(other.registry).decode(), deliveries, outcome="succeeded") is None
