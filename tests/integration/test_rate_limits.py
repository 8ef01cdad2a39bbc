"""API rate limits through the real app (in-process): per key (the merchant's own or the
defaults), per client address, the IETF RateLimit fields on every answer, 429 with
Retry-After, and what happens when the shared counters' Redis is down."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container, bootstrap
from strongroom.entrypoints.api.app import create_app
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings
from tests.support import FakeClock


@asynccontextmanager
async def serving(settings: Settings, clock: FakeClock, **limits: Any) -> AsyncIterator[Container]:
    built = bootstrap(settings.model_copy(update=limits), clock=clock)
    try:
        yield built
    finally:
        await built.aclose()


async def _key(container: Container, name: str) -> tuple[str, str]:
    merchant = await container.merchants.create_merchant(name)
    key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    return merchant.id, key.secret


def _client(container: Container, secret: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container)),
        base_url="http://strongroom.test",
        headers=headers,
    )


async def test_a_key_gets_its_merchants_limit_then_429_with_retry_after(
    settings: Settings, clock: FakeClock
) -> None:
    async with serving(settings, clock) as container:
        merchant, secret = await _key(container, "Acme")
        _, other = await _key(container, "Other")
        await container.merchants.set_rate_limits(merchant, {"reads": "3/hour"})
        async with _client(container, secret) as http, _client(container, other) as them:
            answers = [await http.get("/v1/payment_intents") for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            first = answers[0].headers
            # A request with a key shows its key's window (the address's is counted too).
            assert first["ratelimit-policy"] == '"key-reads";q=3;w=3600'
            assert re.fullmatch(r'"key-reads";r=2;t=\d+', first["ratelimit"])
            refused = answers[3]
            assert 1 <= int(refused.headers["retry-after"]) <= 3600
            assert re.search(r'"key-reads";r=0;t=\d+', refused.headers["ratelimit"])
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
            assert (await them.get("/v1/payment_intents")).status_code == 200, "another key"
            # Writes are a class of their own, at the default.
            created = await http.post("/v1/customers", json={})
            assert created.status_code == 200
            assert '"key-writes";q=100000;w=1' in created.headers["ratelimit-policy"]


async def test_every_answer_carries_the_fields_even_a_refusal_of_the_request(
    settings: Settings, clock: FakeClock
) -> None:
    # A day's window: a sliding-window counter weighs the last window's hits by how much of it
    # still overlaps, so a one-second window crossed between the hit and the reading (on the
    # library's own clock) would show the hit as already gone.
    limits = settings.ratelimit_per_address | {"reads": "100000/day"}
    async with (
        serving(settings, clock, ratelimit_per_address=limits) as container,
        _client(container) as anonymous,
    ):
        answer = await anonymous.get("/v1/payment_intents")  # no key: 401
        assert answer.status_code == 401
        assert answer.headers["ratelimit-policy"] == '"ip-reads";q=100000;w=86400'
        assert re.fullmatch(r'"ip-reads";r=99999;t=\d+', answer.headers["ratelimit"])


async def test_a_client_address_is_limited_before_any_key_is_checked(
    settings: Settings, clock: FakeClock
) -> None:
    limits = settings.ratelimit_per_address | {"reads": "2/hour", "login": "1/hour"}
    async with (
        serving(settings, clock, ratelimit_per_address=limits) as container,
        _client(container, "sk_test_guessed") as guesser,
    ):
        answers = [await guesser.get("/v1/payment_intents") for _ in range(3)]
        statuses = [a.status_code for a in answers]
        assert statuses == [401, 401, 429], "guessing keys from one address is limited"
        assert re.fullmatch(r'"ip-reads";r=0;t=\d+', answers[2].headers["ratelimit"])
        assert int(answers[2].headers["retry-after"]) >= 1
        assert (await guesser.post("/v1/customers", json={})).status_code == 401, "writes apart"
        tokens = [(await guesser.post("/oauth/token", data={})).status_code for _ in range(2)]
        assert tokens[1] == 429


async def test_with_redis_down_reads_answer_and_writes_fail_closed(
    settings: Settings, clock: FakeClock
) -> None:
    down = {"ratelimit_url": "redis://127.0.0.1:1/0"}  # nothing listens on port 1
    async with serving(settings, clock, **down) as container:
        _, secret = await _key(container, "Acme")
        async with _client(container, secret) as http:
            with capture_logs() as logs:
                read = await http.get("/v1/payment_intents")
                write = await http.post("/v1/customers", json={"email": "a@example.com"})
            assert read.status_code == 200, "reads fail open"
            assert "ratelimit" not in read.headers
            assert write.status_code == 503, "writes fail closed"
            assert write.headers["retry-after"] == "1"
            assert write.json()["error"]["code"] == "rate_limiter_unavailable"
            outcomes = {
                (e["route_class"], e["outcome"])
                for e in logs
                if e["event"] == "rate limiter unavailable"
            }
            assert outcomes == {("reads", "open"), ("writes", "closed")}
            async with container.engines.read.connect() as conn:
                stored = await conn.scalar(select(func.count()).select_from(t.customers))
            assert stored == 0, "nothing was written by the refused write"
        metrics = (await _client(container).get("/metrics")).text
        assert 'strongroom_rate_limiter_errors_total{outcome="open",route_class="reads"}' in metrics
        assert (
            'strongroom_rate_limiter_errors_total{outcome="closed",route_class="writes"}' in metrics
        )


@pytest.mark.parametrize("value", ["100/fortnight", "lots"])
async def test_a_merchant_limit_must_be_a_rate(container: Container, value: str) -> None:
    merchant = await container.merchants.create_merchant("Acme")
    with pytest.raises(Exception, match="not a rate"):
        await container.merchants.set_rate_limits(merchant.id, {"reads": value})


@pytest.mark.parametrize(
    "path",
    ["/v1/payment_intents", "/v1/audit/events", "/v1/webhook_endpoints"],
)
async def test_a_page_holds_at_most_100(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path, params={"limit": 100})).status_code == 200
    too_many = await client.get(path, params={"limit": 101})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "limit"


async def test_keys_count_per_key_and_refused_keys_per_address(
    settings: Settings, clock: FakeClock
) -> None:
    """A valid key's requests count against the key, not the address (many merchants' servers
    may share one egress address); a missing or refused key's count against the address."""
    limits = settings.ratelimit_per_address | {"reads": "2/hour"}
    async with serving(settings, clock, ratelimit_per_address=limits) as container:
        _, secret = await _key(container, "Acme")
        async with _client(container, secret) as keyed, _client(container, "sk_x") as bad:
            assert [(await keyed.get("/v1/payment_intents")).status_code for _ in range(4)] == [
                200
            ] * 4
            assert [(await bad.get("/v1/payment_intents")).status_code for _ in range(3)] == [
                401,
                401,
                429,
            ]
            missing = await bad.get("/v1/payment_intents", headers={"Authorization": "Basic x"})
            assert missing.status_code == 429, "a malformed key counts against the address too"
