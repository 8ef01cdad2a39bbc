"""OpenTelemetry spans over the real app and worker, on SQLite and PostgreSQL: a payment request,
its gateway call and a worker pass are traced when tracing is on, with nothing secret on them;
nothing is traced when it is off. Spans are collected by the SDK's InMemorySpanExporter, handed
in through bootstrap's `span_exporter` seam."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from strongroom.bootstrap import Container, bootstrap
from strongroom.entrypoints import worker
from strongroom.entrypoints.api import create_app
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings
from tests.support import FakeClock

CHARGE = {"amount": 100, "currency": "usd", "payment_method": "tok_visa", "confirm": True}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def _app_client(container: Container) -> tuple[httpx.AsyncClient, str]:
    merchant = await container.merchants.create_merchant("Acme")
    key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    transport = httpx.ASGITransport(app=create_app(container))
    client = httpx.AsyncClient(
        transport=transport,
        base_url="http://strongroom.test",
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    return client, key.secret


@pytest.fixture
async def traced(
    settings: Settings, clock: FakeClock, exporter: InMemorySpanExporter
) -> AsyncIterator[Container]:
    built = bootstrap(
        settings.model_copy(update={"tracing": "otlp"}), clock=clock, span_exporter=exporter
    )
    try:
        yield built
    finally:
        await built.aclose()


def by_name(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def attribute_text(spans: Sequence[ReadableSpan]) -> str:
    return " ".join(k + "=" + str(v) for s in spans for k, v in (s.attributes or {}).items())


async def test_a_payment_request_and_its_gateway_call_are_traced(
    traced: Container, exporter: InMemorySpanExporter
) -> None:
    client, secret = await _app_client(traced)
    async with client:
        response = await client.post(
            "/v1/payment_intents",
            json={"amount": 2468, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
        )
        assert response.status_code == 200, response.text
        fetched = await client.get(f"/v1/payment_intents/{response.json()['id']}")
        assert fetched.status_code == 200
    spans = exporter.get_finished_spans()

    request = by_name(spans, "POST /v1/payment_intents")
    assert request.kind is SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/v1/payment_intents"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["strongroom.request_id"] == response.headers["request-id"]

    call = by_name(spans, "gateway authorize")
    assert call.kind is SpanKind.CLIENT
    assert call.parent is not None
    assert (call.context.trace_id, call.parent.span_id) == (
        request.context.trace_id,
        request.context.span_id,
    )
    assert call.attributes is not None
    assert call.attributes["strongroom.gateway"] == "sandbox"
    assert call.attributes["strongroom.gateway.operation"] == "authorize"
    assert call.attributes["strongroom.gateway.outcome"] == "Approved"

    read = by_name(spans, "GET /v1/payment_intents/{intent_id}")
    assert read.attributes is not None
    assert read.attributes["http.route"] == "/v1/payment_intents/{intent_id}"

    # Names, ids and statuses only: no key, no card token, no amount, no raw path.
    text = attribute_text(spans)
    for secret_part in (secret, secret[8:], "tok_visa", "2468", response.json()["id"]):
        assert secret_part not in text


async def test_a_declined_card_is_traced_as_a_gateway_answer_and_a_402(
    traced: Container, exporter: InMemorySpanExporter
) -> None:
    client, _ = await _app_client(traced)
    async with client:
        response = await client.post(
            "/v1/payment_intents",
            json={
                "amount": 500,
                "currency": "usd",
                "payment_method": "tok_chargeDeclined",
                "confirm": True,
            },
        )
    assert response.status_code == 402
    spans = exporter.get_finished_spans()

    call = by_name(spans, "gateway authorize")
    assert call.attributes is not None
    assert call.attributes["strongroom.gateway.outcome"] == "Declined"
    request = by_name(spans, "POST /v1/payment_intents")
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 402
    assert request.status.status_code is not StatusCode.ERROR  # a decline is not our failure


async def test_a_worker_pass_is_traced_loop_by_loop(
    traced: Container, exporter: InMemorySpanExporter
) -> None:
    client, _ = await _app_client(traced)
    async with client:
        await client.post("/v1/payment_intents", json={"amount": 100, "currency": "usd"})
    exporter.clear()

    done = await worker.run_once(traced)
    spans = exporter.get_finished_spans()

    parent = by_name(spans, "worker pass")
    published = by_name(spans, "worker published")
    assert published.parent is not None
    assert published.parent.span_id == parent.context.span_id
    assert published.attributes is not None
    assert published.attributes["strongroom.worker.loop"] == "published"
    assert published.attributes["strongroom.worker.done"] == done["published"] == 1
    children = {s.name for s in spans if s.parent and s.parent.span_id == parent.context.span_id}
    assert children == {f"worker {name}" for name in done}


async def test_nothing_is_traced_when_tracing_is_off(
    settings: Settings, clock: FakeClock, exporter: InMemorySpanExporter
) -> None:
    assert settings.tracing == "off"
    built = bootstrap(settings, clock=clock, span_exporter=exporter)
    try:
        assert not built.tracing.enabled
        client, _ = await _app_client(built)
        async with client:
            response = await client.post(
                "/v1/payment_intents",
                json=CHARGE,
            )
            assert response.status_code == 200
        await worker.run_once(built)
    finally:
        await built.aclose()

    assert exporter.get_finished_spans() == ()


async def test_console_tracing_writes_spans_to_stderr_without_secrets(
    settings: Settings, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    built = bootstrap(settings.model_copy(update={"tracing": "console"}), clock=clock)
    try:
        client, secret = await _app_client(built)
        async with client:
            response = await client.post(
                "/v1/payment_intents",
                json=CHARGE,
            )
            assert response.status_code == 200
    finally:
        await built.aclose()  # flushes the batch processor

    err = capsys.readouterr().err
    assert '"name": "POST /v1/payment_intents"' in err
    assert '"name": "gateway authorize"' in err
    assert secret not in err
    assert "tok_visa" not in err
