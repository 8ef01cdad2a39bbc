"""The NATS JetStream event stream against the real server at 127.0.0.1:4222 (or
STRONGROOM_TEST_NATS_URL): each test makes its own uniquely named stream through the events URL
and deletes it after. Waiting is bounded pumps, never sleeps: a pump with nothing to fetch returns
after the URL's short fetch_wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, DeliverPolicy, StorageType
from nats.js.errors import NotFoundError

from strongroom.adapters.events.nats import NatsBus, NatsOptions, PublishError
from strongroom.adapters.events.port import EventBus, event_bus_from_url
from strongroom.bootstrap import bootstrap
from strongroom.domain.events import Event, EventType
from strongroom.domain.model import PaymentIntent
from strongroom.service_layer import commands as c
from strongroom.settings import Settings
from tests.support import FakeClock, service_missing, unique_name

NATS_URL = os.environ.get("STRONGROOM_TEST_NATS_URL", "nats://127.0.0.1:4222")
PUMPS = 30  # bound on pump loops: each returns within fetch_wait when nothing is waiting


class Admin:
    """A plain client for looking at and removing the test's stream, beside the bus."""

    def __init__(self, nc: Client, stream: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.stream = stream

    async def stored(self) -> int:
        return (await self.js.stream_info(self.stream)).state.messages

    async def delete(self) -> None:
        with contextlib.suppress(NotFoundError):
            await self.js.delete_stream(self.stream)


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    try:
        nc = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        service_missing(f"NATS at {NATS_URL}", f"{type(exc).__name__}: {exc}")
    try:
        if nc.connected_server_version.major < 2:
            service_missing(f"NATS at {NATS_URL}", "JetStream needs nats-server 2")
        box = Admin(nc, unique_name("SR").upper())
        try:
            await box.js.account_info()
        except nats.errors.Error as exc:
            service_missing(f"NATS JetStream at {NATS_URL}", f"{type(exc).__name__}: {exc}")
        yield box
        await box.delete()
    finally:
        await nc.close()


@pytest.fixture
def events_url(admin: Admin) -> str:
    # Retries at once and a short empty fetch, so the bounded pump loops finish quickly.
    return f"{NATS_URL}?stream={admin.stream}&nak_delay=0&fetch_wait=0.2"


@pytest.fixture
async def buses(events_url: str) -> AsyncIterator[Callable[[], NatsBus]]:
    """Makes buses on the test's stream (workers, in effect) and closes them after."""
    made: list[NatsBus] = []

    def make() -> NatsBus:
        bus = NatsBus.from_url(events_url)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


def make_events(count: int, *, start: int = 1) -> list[Event]:
    """Events on a few aggregates and types, as the relay would hand them over."""
    types = list(EventType)
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    return [
        Event(
            seq=seq,
            id=f"evt_{seq:06d}",
            type=types[seq % len(types)],
            merchant_id="acct_test",
            livemode=False,
            aggregate_type="payment_intent",
            aggregate_id=f"pi_{seq % 7}",
            created_at=at + timedelta(seconds=seq),
            data={"object": "payment_intent", "amount": seq * 100, "currency": "usd"},
        )
        for seq in range(start, start + count)
    ]


Recorder = Callable[[Sequence[Event]], Awaitable[None]]


def recorder(into: list[Event]) -> Recorder:
    async def handle(events: Sequence[Event]) -> None:
        into.extend(events)

    return handle


async def pump_until(done: Callable[[], bool], *buses: EventBus, limit: int = 100) -> int:
    handled = 0
    for _ in range(PUMPS):
        if done():
            return handled
        handled += sum(await asyncio.gather(*(bus.pump(limit) for bus in buses)))
    assert done(), "the events did not all arrive within the bounded pumps"
    return handled


def test_url_options() -> None:
    options = NatsOptions.from_url("nats://nats.internal:4222?stream=PAY_1&ack_wait=90")
    assert options.server == "nats://nats.internal:4222"
    assert options.stream == "PAY_1"
    assert options.ack_wait == 90
    assert NatsOptions.from_url("nats://127.0.0.1:4222").stream == "STRONGROOM"
    assert isinstance(event_bus_from_url("nats://127.0.0.1:4222?stream=X"), NatsBus)
    for bad, why in (
        ("nats://h:4222?stream=a.b", "stream name"),  # a dot would split its subjects
        ("nats://h:4222?stream=", "stream name"),
        ("nats://h:4222?ack_wait=soon", "ack_wait must be a number"),
        ("nats://h:4222?fetch_wait=0", "must be positive"),
        ("nats://h:4222?nak_delay=nan", "nak_delay must be a number"),
        ("nats://h:4222?strem=X", "unknown events URL options: strem"),
        ("http://h:4222", "must look like nats://"),
    ):
        with pytest.raises(ValueError, match=why):
            NatsOptions.from_url(bad)


async def test_every_consumer_receives_every_event_in_publish_order(
    buses: Callable[[], NatsBus], admin: Admin
) -> None:
    bus = buses()
    reporting: list[Event] = []
    webhooks: list[Event] = []
    bus.subscribe("reporting", recorder(reporting))
    bus.subscribe("webhooks", recorder(webhooks))
    await bus.start()
    events = make_events(120)

    await bus.publish(events[:70])
    await bus.publish(events[70:])
    handled = await pump_until(lambda: len(reporting) == len(webhooks) == 120, bus, limit=50)

    assert reporting == events  # whole events, equal field by field, in publish order
    assert webhooks == events
    assert handled == 240
    assert await admin.stored() == 120
    # Subjects carry the event type, so a consumer could filter on it.
    last = await admin.js.get_last_msg(admin.stream, f"{admin.stream}.events.{events[-1].type}")
    assert Event.from_json(last.data or b"") == events[-1]


async def test_republishing_an_event_stores_it_once(
    buses: Callable[[], NatsBus], admin: Admin
) -> None:
    bus = buses()
    seen: list[Event] = []
    bus.subscribe("reporting", recorder(seen))
    events = make_events(3)

    await bus.publish(events[:2])
    await bus.publish(events[:2])  # the relay died before marking them published
    await bus.publish(events[1:])
    await pump_until(lambda: len(seen) >= 3, bus)
    assert await bus.pump(10) == 0

    assert await admin.stored() == 3
    assert [e.id for e in seen] == [e.id for e in events]


async def test_a_failing_handler_gets_the_event_again_and_blocks_no_other(
    buses: Callable[[], NatsBus], capsys: pytest.CaptureFixture[str]
) -> None:
    bus = buses()
    events = make_events(4)
    poisoned = events[1]
    attempts: list[str] = []
    applied: list[str] = []
    steady: list[Event] = []

    async def flaky(batch: Sequence[Event]) -> None:
        # Fails on the poisoned event's first two attempts: in its batch, then alone.
        attempts.extend(event.id for event in batch)
        if poisoned in batch and attempts.count(poisoned.id) <= 2:
            raise RuntimeError("projection store unavailable")
        applied.extend(event.id for event in batch)

    bus.subscribe("flaky", flaky)
    bus.subscribe("steady", recorder(steady))
    await bus.publish(events)

    first = await bus.pump(10)
    assert first == 4 + 3, "the failure is not counted as handled"
    assert applied == [events[0].id, events[2].id, events[3].id], "its batch-mates went on"
    assert steady == events, "the other consumer was not held up"

    await pump_until(lambda: poisoned.id in applied, bus)
    assert attempts.count(poisoned.id) == 3, "in the batch, alone, then redelivered"
    assert sorted(applied) == sorted(e.id for e in events)
    assert await bus.pump(10) == 0, "acked events are not delivered again"

    captured = capsys.readouterr()
    logged = captured.out + captured.err
    assert "event handler failed" in logged
    assert poisoned.id in logged
    assert '"amount": 200' not in logged, "no event data in the log"
    assert "'amount': 200" not in logged, "no event data in the log"


async def test_two_workers_share_a_durable_consumer(
    buses: Callable[[], NatsBus], admin: Admin
) -> None:
    handled_by: dict[str, list[str]] = {"a": [], "b": []}
    worker_a, worker_b = buses(), buses()

    def handler_for(worker: str) -> Recorder:
        async def handle(events: Sequence[Event]) -> None:
            handled_by[worker].extend(event.id for event in events)

        return handle

    worker_a.subscribe("projector", handler_for("a"))
    worker_b.subscribe("projector", handler_for("b"))
    await asyncio.gather(worker_a.start(), worker_b.start())
    events = make_events(200)
    await worker_a.publish(events)

    def total() -> int:
        return len(handled_by["a"]) + len(handled_by["b"])

    # Each pull takes at most 25, so neither worker can take the whole batch at once.
    handled = await pump_until(lambda: total() >= 200, worker_a, worker_b, limit=25)

    counts = Counter(handled_by["a"] + handled_by["b"])
    assert set(counts) == {e.id for e in events}
    assert set(counts.values()) == {1}, "every event was handled exactly once in all"
    assert handled == 200
    assert handled_by["a"], "both workers took a share"
    assert handled_by["b"], "both workers took a share"
    info = await admin.js.consumer_info(admin.stream, "projector")
    assert (info.num_ack_pending, info.num_redelivered, info.num_pending) == (0, 0, 0)


async def test_a_consumer_made_later_receives_earlier_events(
    buses: Callable[[], NatsBus],
) -> None:
    publisher = buses()
    events = make_events(5)
    await publisher.publish(events)  # no consumer exists yet

    late = buses()
    seen: list[Event] = []
    late.subscribe("late", recorder(seen))
    await late.start()
    await pump_until(lambda: len(seen) >= 5, late)

    assert seen == events


async def test_start_is_idempotent_and_concurrent(
    buses: Callable[[], NatsBus], admin: Admin
) -> None:
    workers = [buses() for _ in range(3)]
    seen: list[Event] = []
    for worker in workers:
        worker.subscribe("reporting", recorder(seen))
    await asyncio.gather(*(worker.start() for worker in workers))
    await workers[0].start()
    await workers[0].start()

    stream = await admin.js.stream_info(admin.stream)
    assert stream.config.subjects == [f"{admin.stream}.events.>"]
    assert stream.config.storage == StorageType.FILE
    assert stream.config.duplicate_window == 120
    consumer = await admin.js.consumer_info(admin.stream, "reporting")
    assert consumer.config.durable_name == "reporting"
    assert consumer.config.ack_policy == AckPolicy.EXPLICIT
    assert consumer.config.deliver_policy == DeliverPolicy.ALL
    assert consumer.config.max_deliver == -1
    assert consumer.config.ack_wait == 60

    events = make_events(3)
    await workers[1].publish(events)
    await pump_until(lambda: len(seen) >= 3, *workers)
    assert sorted(e.id for e in seen) == [e.id for e in events]


async def test_publish_raises_when_the_stream_is_gone(
    buses: Callable[[], NatsBus], admin: Admin
) -> None:
    bus = buses()
    await bus.start()
    await admin.delete()

    with pytest.raises(PublishError, match="3 of 3 events"):
        await bus.publish(make_events(3))


async def test_relay_publishes_payment_events_that_consumers_receive(
    admin: Admin, events_url: str, database_url: str, kms_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    settings = Settings(
        database_url=database_url,
        env="test",
        db_pool_size=20,
        kms_url=kms_url,
        events_url=events_url,
        reporting_url=f"duckdb:///{tmp_path / 'reporting.duckdb'}",
    )
    container = bootstrap(settings, clock=clock)
    received: list[Event] = []
    container.bus.subscribe("test-listener", recorder(received))
    try:
        await container.start()
        merchant = await container.merchants.create_merchant("Stream Co")
        caller = c.Caller(merchant_id=merchant.id, livemode=False)
        pi = await container.payments.create_payment_intent(
            caller,
            c.CreatePaymentIntent(
                amount=2500, currency="usd", payment_method="tok_visa", confirm=True
            ),
            None,
        )
        assert isinstance(pi, PaymentIntent)

        published = await container.relay.run_once()
        assert published >= 2
        assert await container.relay.run_once() == 0, "marked published: not sent again"
        await pump_until(lambda: len(received) >= published, container.bus)

        mine = [(e.type, e.data["status"]) for e in received if e.aggregate_id == pi.id]
        assert mine == [
            ("payment_intent.created", "processing"),
            ("payment_intent.succeeded", "succeeded"),
        ]
        succeeded = next(e for e in received if e.type == "payment_intent.succeeded")
        assert succeeded.merchant_id == merchant.id
        assert succeeded.data["amount_received"] == 2500
        assert [e.seq for e in received] == sorted(e.seq for e in received)
        assert await admin.stored() == published
    finally:
        await container.aclose()
