"""The transactional outbox and its relay, on SQLite and PostgreSQL: events exist exactly when
their change committed, leave in commit order per aggregate, at least once, and one relay runs at
a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from strongroom.adapters.db import outbox_store
from strongroom.adapters.db import tables as t
from strongroom.adapters.events.port import EventBus
from strongroom.bootstrap import Container
from strongroom.domain.errors import CardError
from strongroom.domain.events import Event, EventType
from strongroom.domain.model import CaptureMethod, Customer, PaymentIntent, Refund
from strongroom.service_layer import commands as c
from strongroom.service_layer.outbox import Relay, prune_outbox
from tests.support import FakeClock


class RecordingBus(EventBus):
    """A stream that keeps what it was given, and can be told to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Event] = []
        self.fail = False

    async def start(self) -> None:
        return None

    async def publish(self, events: Sequence[Event]) -> None:
        if self.fail:
            raise ConnectionError("stream unavailable")
        self.published.extend(events)

    async def pump(self, limit: int) -> int:
        return 0

    async def close(self) -> None:
        return None


@pytest.fixture
async def caller(container: Container) -> c.Caller:
    merchant = await container.merchants.create_merchant("Outbox Ltd")
    return c.Caller(merchant_id=merchant.id, livemode=False)


async def _outbox(container: Container) -> list[tuple[str, str, str]]:
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(t.outbox.c.type, t.outbox.c.aggregate_id, t.outbox.c.data).order_by(
                t.outbox.c.seq
            )
        )
        return [(r.type, r.aggregate_id, r.data["status"]) for r in rows]


async def test_each_transition_writes_its_event_with_the_committed_object(
    container: Container, caller: c.Caller
) -> None:
    pi = await container.payments.create_payment_intent(
        caller,
        c.CreatePaymentIntent(
            amount=2000,
            currency="usd",
            payment_method="tok_visa",
            capture_method=CaptureMethod.MANUAL,
            confirm=True,
        ),
        None,
    )
    assert isinstance(pi, PaymentIntent)
    await container.payments.capture(caller, c.CapturePaymentIntent(pi.id, 1500), None)
    refund = await container.payments.create_refund(caller, c.CreateRefund(pi.id, 500), None)
    assert isinstance(refund, Refund)
    with pytest.raises(CardError):
        await container.payments.create_payment_intent(
            caller,
            c.CreatePaymentIntent(
                amount=300, currency="eur", payment_method="tok_chargeDeclined", confirm=True
            ),
            None,
        )

    events = await _outbox(container)
    declined_id = events[-1][1]
    assert events == [
        ("payment_intent.created", pi.id, "processing"),  # phase 1 commits it mid-confirm
        ("payment_intent.amount_capturable_updated", pi.id, "requires_capture"),
        ("payment_intent.succeeded", pi.id, "succeeded"),
        ("refund.created", refund.id, "pending"),
        ("refund.updated", refund.id, "succeeded"),
        ("payment_intent.created", declined_id, "processing"),
        ("payment_intent.payment_failed", declined_id, "requires_payment_method"),
    ]
    async with container.uow.reading() as repo:
        data = (
            await repo.conn.execute(
                select(t.outbox.c.data).where(t.outbox.c.type == "payment_intent.succeeded")
            )
        ).scalar_one()
    assert data["object"] == "payment_intent"
    assert data["amount_received"] == 1500
    assert data["gateway"] == "sandbox"


async def test_a_change_that_rolls_back_leaves_no_event(
    container: Container, caller: c.Caller, clock: FakeClock
) -> None:
    customer = Customer("cus_x", caller.merchant_id, None, None, None, {}, False, clock.now())
    customer.raise_event(EventType.CUSTOMER_CREATED)

    async def fail_before_commit() -> None:
        async with container.uow.transaction() as tx:
            await tx.repo.add_customer(customer)
            raise RuntimeError("the handler fails before committing")

    with pytest.raises(RuntimeError):
        await fail_before_commit()
    assert await _outbox(container) == []
    async with container.uow.reading() as repo:
        assert await repo.get_customer(caller.merchant_id, "cus_x") is None


async def test_relay_publishes_in_order_once_and_marks_rows(
    container: Container, caller: c.Caller, clock: FakeClock
) -> None:
    for amount in (100, 200, 300):
        await container.payments.create_payment_intent(
            caller,
            c.CreatePaymentIntent(
                amount=amount, currency="usd", payment_method="tok_visa", confirm=True
            ),
            None,
        )
    bus = RecordingBus()
    relay = Relay(container.uow, bus, clock, batch_size=4)  # two batches for six events

    assert await relay.run_once() == 6
    seqs = [e.seq for e in bus.published]
    assert seqs == sorted(seqs)
    assert [e.type for e in bus.published[:2]] == [
        "payment_intent.created",
        "payment_intent.succeeded",
    ]
    assert bus.published[1].data["amount_received"] == 100
    assert await relay.run_once() == 0  # nothing is published twice by a live relay
    async with container.uow.reading() as repo:
        assert await outbox_store.backlog(repo.conn) == (0, None)


async def test_a_failed_publish_marks_nothing_and_is_retried(
    container: Container, caller: c.Caller, clock: FakeClock
) -> None:
    await container.payments.create_customer(caller, c.CreateCustomer(email="a@example.com"), None)
    bus = RecordingBus()
    bus.fail = True
    relay = Relay(container.uow, bus, clock)
    with pytest.raises(ConnectionError):
        await relay.run_once()
    async with container.uow.reading() as repo:
        count, oldest = await outbox_store.backlog(repo.conn)
    assert (count, oldest) == (1, clock.now())

    bus.fail = False
    assert await relay.run_once() == 1
    assert [e.type for e in bus.published] == ["customer.created"]


async def test_one_relay_at_a_time_until_its_lease_expires(
    container: Container, caller: c.Caller, clock: FakeClock
) -> None:
    first_bus, second_bus = RecordingBus(), RecordingBus()
    first = Relay(container.uow, first_bus, clock)
    second = Relay(container.uow, second_bus, clock)
    await container.payments.create_customer(caller, c.CreateCustomer(), None)
    assert await first.run_once() == 1  # takes the lease

    await container.payments.create_customer(caller, c.CreateCustomer(), None)
    assert await second.run_once() == 0  # the lease is the first relay's
    clock.advance(seconds=31)  # the first relay died: its lease runs out
    assert await second.run_once() == 1
    assert await first.run_once() == 0  # and now the second one holds it

    await second.release()  # a graceful stop hands it over at once
    await container.payments.create_customer(caller, c.CreateCustomer(), None)
    assert await first.run_once() == 1
    assert len(first_bus.published) + len(second_bus.published) == 3


async def test_in_process_stream_publishes_only_what_every_consumer_applied(
    container: Container, caller: c.Caller
) -> None:
    applied: dict[str, list[str]] = {"reporting": [], "webhooks": []}
    broken = {"webhooks": True}

    async def reporting(events: Sequence[Event]) -> None:
        applied["reporting"].extend(event.id for event in events)

    async def webhooks(events: Sequence[Event]) -> None:
        if broken["webhooks"]:
            raise RuntimeError("receiver store down")
        applied["webhooks"].extend(event.id for event in events)

    container.bus.handlers.clear()  # just these two consumers
    container.bus.subscribe("reporting", reporting)
    container.bus.subscribe("webhooks", webhooks)
    await container.payments.create_customer(caller, c.CreateCustomer(), None)

    with pytest.raises(RuntimeError):
        await container.relay.run_once()
    broken["webhooks"] = False
    assert await container.relay.run_once() == 1
    # At least once: the consumer that had applied it sees it again (and would skip it by id).
    assert len(applied["reporting"]) == 2
    assert len(set(applied["reporting"])) == 1
    assert applied["webhooks"] == applied["reporting"][:1]


async def test_published_events_are_pruned_after_retention(
    container: Container, caller: c.Caller, clock: FakeClock
) -> None:
    await container.payments.create_customer(caller, c.CreateCustomer(), None)
    await container.payments.create_customer(caller, c.CreateCustomer(), None)
    await Relay(container.uow, RecordingBus(), clock).run_once()
    await container.payments.create_customer(caller, c.CreateCustomer(), None)  # unpublished
    clock.advance(hours=25)
    assert await prune_outbox(container.uow, clock, timedelta(hours=24)) == 2
    async with container.uow.reading() as repo:
        count, _ = await outbox_store.backlog(repo.conn)
        total = (await repo.conn.execute(select(func.count()).select_from(t.outbox))).scalar()
    assert (count, total) == (1, 1)  # an unpublished event is never pruned, however old
