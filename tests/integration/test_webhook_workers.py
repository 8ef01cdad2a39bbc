"""The webhook delivery loop, on SQLite and PostgreSQL, against a real receiver on 127.0.0.1:
the retry schedule walked with a FakeClock, Retry-After, 410 Gone, a schedule of nothing but
failures disabling the endpoint (and telling the merchant), refused targets, redirects, leases
that outlive a dead worker, and two workers never sending one delivery twice."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from sqlalchemy import Row, func, select

from strongroom.adapters.db import tables as t
from strongroom.adapters.db import webhook_store
from strongroom.adapters.http.safe_client import SafeClient
from strongroom.bootstrap import Container, bootstrap
from strongroom.domain.events import Event, EventType
from strongroom.domain.ids import new_id
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.webhooks import (
    CreateWebhookEndpoint,
    UpdateWebhookEndpoint,
    WithSecret,
)
from strongroom.settings import Settings
from tests.integration.webhook_receiver import Received, Receiver, Reply, running_receiver
from tests.support import FakeClock


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


@pytest.fixture
async def caller(container: Container) -> Caller:
    merchant = await container.merchants.create_merchant("Hooks Ltd")
    return Caller(merchant_id=merchant.id, livemode=False)


class StaticResolver:
    """A resolver the test controls: host name → addresses."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int) -> list[str]:
        return self.answers[host]


def replies(*answers: Reply) -> Callable[[Received], Reply]:
    """Answer with each reply in turn, then 200s."""
    queue = list(answers)
    return lambda _request: queue.pop(0) if queue else Reply()


async def _endpoint(
    container: Container, caller: Caller, url: str, events: list[str] | None = None
) -> WithSecret:
    return await container.webhooks.create_endpoint(
        caller, CreateWebhookEndpoint(url=url, enabled_events=events or ["*"])
    )


def _event(
    container: Container, caller: Caller, kind: EventType = EventType.PAYMENT_INTENT_SUCCEEDED
) -> Event:
    pi = new_id("pi")
    return Event(
        seq=1,
        id=new_id("evt"),
        type=str(kind),
        merchant_id=caller.merchant_id,
        livemode=caller.livemode,
        aggregate_type="payment_intent",
        aggregate_id=pi,
        created_at=container.clock.now(),
        data={"id": pi, "object": "payment_intent", "amount": 1000, "currency": "usd"},
    )


async def _deliveries(container: Container, endpoint_id: str) -> list[Row[Any]]:
    d = t.webhook_deliveries
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(d).where(d.c.endpoint_id == endpoint_id).order_by(d.c.created_at, d.c.id)
        )
        return list(rows.all())


async def _attempts(container: Container, delivery_id: str) -> list[Row[Any]]:
    a = t.webhook_attempts
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(a).where(a.c.delivery_id == delivery_id).order_by(a.c.id)
        )
        return list(rows.all())


async def _disabled_events(container: Container) -> list[Row[Any]]:
    o = t.outbox
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(o).where(o.c.type == EventType.WEBHOOK_ENDPOINT_DISABLED).order_by(o.c.seq)
        )
        return list(rows.all())


async def test_a_batch_fans_out_to_each_events_own_merchant_and_mode(
    container: Container, caller: Caller, receiver: Receiver
) -> None:
    """The stream hands the consumer a batch mixing merchants and modes: each event goes only
    to endpoints of its own merchant and mode that take it, and the batch again adds nothing."""
    other_merchant = await container.merchants.create_merchant("Other Hooks")
    other = Caller(merchant_id=other_merchant.id, livemode=False)
    live = Caller(merchant_id=caller.merchant_id, livemode=True)
    mine = await _endpoint(container, caller, receiver.url())
    refunds_only = await _endpoint(
        container, caller, receiver.url(), events=[str(EventType.REFUND_CREATED)]
    )
    theirs = await _endpoint(container, other, receiver.url())
    batch = [
        _event(container, caller),
        _event(container, other),
        _event(container, live),  # no live endpoint: goes nowhere
        _event(container, caller, EventType.REFUND_CREATED),
    ]

    await container.webhooks.handle(batch)
    await container.webhooks.handle(batch)

    def got(endpoint: WithSecret) -> list[str]:
        return [d.event_id for d in deliveries[endpoint.endpoint.id]]

    deliveries = {
        ep.endpoint.id: await _deliveries(container, ep.endpoint.id)
        for ep in (mine, refunds_only, theirs)
    }
    assert sorted(got(mine)) == sorted([batch[0].id, batch[3].id])
    assert got(refunds_only) == [batch[3].id]
    assert got(theirs) == [batch[1].id]


async def test_a_failed_attempt_is_retried_when_due_and_not_before(
    container: Container, caller: Caller, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.script = replies(Reply(500, body=b"boom"))
    endpoint = await _endpoint(container, caller, receiver.url())
    receiver.secrets = {"current": endpoint.secret}
    event = _event(container, caller)
    await container.webhooks.handle([event])

    assert await container.webhooks.deliver_due(10) == 1
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    assert delivery.status == "pending"
    due = delivery.next_attempt_at
    assert timedelta(seconds=4.5) <= due - clock.now() <= timedelta(seconds=5.5)  # 5 s ± 10 %

    clock.current = due - timedelta(milliseconds=1)
    assert await container.webhooks.deliver_due(10) == 0
    assert len(receiver.received) == 1

    clock.current = due
    assert await container.webhooks.deliver_due(10) == 1
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    assert delivery.status == "succeeded"
    assert delivery.delivered_at == due
    attempts = await _attempts(container, delivery.id)
    assert [(a.status_code, a.response_body) for a in attempts] == [
        (500, "boom"),
        (200, '{"received":true}'),
    ]
    first, second = receiver.received
    assert first.webhook_id == second.webhook_id == event.id
    assert first.verified_by == second.verified_by == {"current"}
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]


@pytest.mark.parametrize(
    ("status", "retry_after", "wait"),
    [
        (503, "120", timedelta(seconds=120)),
        (429, "in an hour", timedelta(hours=1)),  # an HTTP date, filled in below
        (503, "999999", timedelta(hours=24)),  # capped
    ],
)
async def test_retry_after_is_honoured_on_429_and_503(
    container: Container,
    caller: Caller,
    clock: FakeClock,
    receiver: Receiver,
    status: int,
    retry_after: str,
    wait: timedelta,
) -> None:
    if retry_after == "in an hour":
        retry_after = format_datetime(clock.now() + timedelta(hours=1), usegmt=True)
    receiver.script = replies(Reply(status, {"Retry-After": retry_after}))
    endpoint = await _endpoint(container, caller, receiver.url())
    await container.webhooks.handle([_event(container, caller)])
    start = clock.now()

    await container.webhooks.deliver_due(10)
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    assert delivery.next_attempt_at == start + wait  # later than the schedule's 5 s

    clock.current = start + wait - timedelta(seconds=1)
    assert await container.webhooks.deliver_due(10) == 0
    clock.current = start + wait
    assert await container.webhooks.deliver_due(10) == 1
    assert [r.webhook_id for r in receiver.received] == [delivery.event_id] * 2


async def test_retry_after_on_a_500_does_not_stretch_the_schedule(
    container: Container, caller: Caller, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.script = replies(Reply(500, {"Retry-After": "3600"}))
    endpoint = await _endpoint(container, caller, receiver.url())
    await container.webhooks.handle([_event(container, caller)])
    await container.webhooks.deliver_due(10)
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    assert delivery.next_attempt_at - clock.now() <= timedelta(seconds=5.5)


async def test_410_gone_disables_the_endpoint_at_once(
    container: Container, caller: Caller, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.script = lambda _request: Reply(410)
    endpoint = await _endpoint(container, caller, receiver.url())
    await container.webhooks.handle([_event(container, caller)])
    clock.advance(seconds=1)
    await container.webhooks.handle([_event(container, caller)])

    assert await container.webhooks.deliver_due(1) == 1  # the older one only
    first, waiting = await _deliveries(container, endpoint.endpoint.id)
    assert waiting.status == "pending"
    assert first.status == "failed"
    assert first.next_attempt_at is None
    got = await container.webhooks.get_endpoint(caller, endpoint.endpoint.id)
    assert (got.status, got.disabled_reason) == ("disabled", "gone")

    # Its waiting delivery stops, and new events make none.
    clock.advance(hours=1)
    assert await container.webhooks.deliver_due(10) == 0
    await container.webhooks.handle([_event(container, caller)])
    assert len(await _deliveries(container, endpoint.endpoint.id)) == 2
    assert len(receiver.received) == 1

    [disabled] = await _disabled_events(container)
    assert disabled.aggregate_type == "webhook_endpoint"
    assert disabled.aggregate_id == endpoint.endpoint.id
    assert disabled.merchant_id == caller.merchant_id
    assert disabled.data["status"] == "disabled"
    assert disabled.data["disabled_reason"] == "gone"
    assert "secret" not in disabled.data


async def test_a_whole_schedule_of_failures_disables_the_endpoint_and_tells_the_merchant(
    container: Container, caller: Caller, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.script = lambda request: Reply(500) if request.path == "/failing" else Reply()
    failing = await _endpoint(container, caller, receiver.url("/failing"))
    watcher = await _endpoint(
        container, caller, receiver.url("/watcher"), ["webhook_endpoint.disabled"]
    )
    receiver.secrets = {"failing": failing.secret, "watcher": watcher.secret}
    await container.webhooks.handle([_event(container, caller)])
    start = clock.now()

    for attempt in range(1, 11):
        assert await container.webhooks.deliver_due(10) == 1, attempt
        [delivery] = await _deliveries(container, failing.endpoint.id)
        if attempt < 10:
            assert delivery.status == "pending"
            assert await _disabled_events(container) == []
            clock.current = delivery.next_attempt_at
    assert delivery.status == "failed"
    assert delivery.attempt_count == 10
    assert timedelta(days=2.8) < clock.now() - start < timedelta(days=3.5)  # ≈ 3 days
    assert len(receiver.at("/failing")) == 10
    assert all(r.verified_by == {"failing"} for r in receiver.at("/failing"))
    assert len({r.webhook_id for r in receiver.at("/failing")}) == 1

    got = await container.webhooks.get_endpoint(caller, failing.endpoint.id)
    assert (got.status, got.disabled_reason) == ("disabled", "failing")
    [disabled] = await _disabled_events(container)
    assert disabled.aggregate_id == failing.endpoint.id

    # Even re-enabled before the event goes out, the endpoint is not sent news of itself.
    await container.webhooks.update_endpoint(
        caller, failing.endpoint.id, UpdateWebhookEndpoint(disabled=False)
    )
    await container.relay.run_once()
    assert await container.webhooks.deliver_due(10) == 1
    [told] = receiver.at("/watcher")
    assert told.json()["type"] == "webhook_endpoint.disabled"
    assert told.json()["data"]["object"]["id"] == failing.endpoint.id
    assert told.verified_by == {"watcher"}
    assert len(receiver.at("/failing")) == 10


async def test_one_success_during_the_schedule_keeps_the_endpoint_enabled(
    container: Container, caller: Caller, clock: FakeClock, receiver: Receiver
) -> None:
    doomed = _event(container, caller)
    receiver.script = lambda request: Reply(500) if request.webhook_id == doomed.id else Reply()
    endpoint = await _endpoint(container, caller, receiver.url())
    await container.webhooks.handle([doomed])
    await container.webhooks.deliver_due(10)
    clock.advance(hours=30)  # in the middle of the doomed delivery's three days
    await container.webhooks.handle([_event(container, caller)])

    while True:
        await container.webhooks.deliver_due(10)
        rows = {r.event_id: r for r in await _deliveries(container, endpoint.endpoint.id)}
        if rows[doomed.id].status != "pending":
            break
        clock.current = max(clock.now(), rows[doomed.id].next_attempt_at)
    assert rows[doomed.id].status == "failed"
    assert rows[doomed.id].attempt_count == 10
    assert {r.status for r in rows.values()} == {"failed", "succeeded"}
    got = await container.webhooks.get_endpoint(caller, endpoint.endpoint.id)
    assert got.status == "enabled"
    assert await _disabled_events(container) == []


async def test_a_refused_target_is_recorded_with_its_reason_and_nothing_is_sent(
    container: Container, caller: Caller, clock: FakeClock, receiver: Receiver
) -> None:
    # Names are not resolved when the endpoint is made: their addresses can change, so they
    # are checked on every delivery, with the resolver the client was given.
    url = f"http://hooks.merchant.test:{receiver.port}/hooks"
    endpoint = await _endpoint(container, caller, url)
    receiver.secrets = {"current": endpoint.secret}
    resolver = StaticResolver({"hooks.merchant.test": ["10.0.0.1"]})
    await container.webhooks.client.aclose()
    container.webhooks.client = SafeClient(resolver=resolver, allow_loopback=True)
    await container.webhooks.handle([_event(container, caller)])

    assert await container.webhooks.deliver_due(10) == 1
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    [attempt] = await _attempts(container, delivery.id)
    assert attempt.status_code is None
    assert "10.0.0.1" in attempt.error
    assert "a private address" in attempt.error
    assert delivery.status == "pending"  # the name may point elsewhere by the next attempt
    assert receiver.received == []
    refused = container.metrics.registry.get_sample_value(
        "strongroom_webhook_deliveries_total", {"outcome": "refused"}
    )
    assert refused == 1

    # The same name answering with the receiver's address is delivered: it was the address.
    resolver.answers["hooks.merchant.test"] = ["127.0.0.1"]
    clock.current = delivery.next_attempt_at
    assert await container.webhooks.deliver_due(10) == 1
    [received] = receiver.received
    assert received.verified_by == {"current"}


async def test_a_redirect_is_not_followed(
    container: Container, caller: Caller, receiver: Receiver
) -> None:
    elsewhere = receiver.url("/elsewhere")
    receiver.script = lambda request: (
        Reply(302, {"Location": elsewhere}) if request.path == "/moved" else Reply()
    )
    endpoint = await _endpoint(container, caller, receiver.url("/moved"))
    await container.webhooks.handle([_event(container, caller)])

    await container.webhooks.deliver_due(10)
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    [attempt] = await _attempts(container, delivery.id)
    assert attempt.status_code == 302
    assert attempt.error == f"redirect not followed (Location: {elsewhere})"
    assert delivery.status == "pending"
    assert receiver.at("/elsewhere") == []


async def test_a_connection_refused_is_recorded(
    container: Container, caller: Caller, receiver: Receiver
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = await _endpoint(container, caller, f"http://127.0.0.1:{port}/hooks")
    await container.webhooks.handle([_event(container, caller)])

    await container.webhooks.deliver_due(10)
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    [attempt] = await _attempts(container, delivery.id)
    assert attempt.status_code is None
    assert "could not connect to 127.0.0.1" in attempt.error
    assert attempt.duration_ms >= 0
    assert delivery.status == "pending"


async def test_a_dead_workers_lease_expires_and_another_sends(
    container: Container, caller: Caller, clock: FakeClock, receiver: Receiver
) -> None:
    endpoint = await _endpoint(container, caller, receiver.url())
    await container.webhooks.handle([_event(container, caller)])
    now = clock.now()
    async with container.uow.transaction() as tx:  # a worker leases, then is SIGKILLed
        [leased] = await webhook_store.lease_due(tx.repo.conn, now, now + timedelta(minutes=1), 10)
        await tx.commit()

    assert await container.webhooks.deliver_due(10) == 0
    clock.advance(minutes=1, seconds=1)
    assert await container.webhooks.deliver_due(10) == 1
    [received] = receiver.received
    assert received.webhook_id == leased.event_id
    [delivery] = await _deliveries(container, endpoint.endpoint.id)
    assert delivery.status == "succeeded"
    assert delivery.locked_until is None


@pytest.fixture
async def second_worker(settings: Settings, clock: FakeClock) -> AsyncIterator[Container]:
    """Another process's container: its own engine, so its own database connections."""
    other = bootstrap(settings, clock=clock)
    try:
        yield other
    finally:
        await other.aclose()


async def test_two_workers_never_send_a_delivery_twice(
    container: Container,
    second_worker: Container,
    caller: Caller,
    receiver: Receiver,
) -> None:
    endpoint = await _endpoint(container, caller, receiver.url())
    receiver.secrets = {"current": endpoint.secret}
    events = [_event(container, caller) for _ in range(200)]
    for event in events:
        await container.webhooks.handle([event])

    async def drain(worker: Container) -> int:
        sent = 0
        while done := await worker.webhooks.deliver_due(20):
            sent += done
        return sent

    first, second = await asyncio.gather(drain(container), drain(second_worker))

    assert first + second == 200
    assert first > 0  # both really worked, side by side
    assert second > 0
    seen = Counter(r.webhook_id for r in receiver.received)
    assert seen == Counter({e.id: 1 for e in events})
    assert all(r.verified_by == {"current"} for r in receiver.received)
    deliveries = await _deliveries(container, endpoint.endpoint.id)
    assert {(d.status, d.attempt_count) for d in deliveries} == {("succeeded", 1)}
    async with container.uow.reading() as repo:
        attempts = await repo.conn.execute(
            select(t.webhook_attempts.c.delivery_id, func.count()).group_by(
                t.webhook_attempts.c.delivery_id
            )
        )
        per_delivery = {delivery_id: count for delivery_id, count in attempts}
    assert per_delivery == {d.id: 1 for d in deliveries}
