"""The event stream port: the relay publishes committed outbox events to it; named durable
consumers (reporting, webhooks) receive them at least once and must be idempotent by event id.

Adapters: `memory://` (in-process: publishing runs every consumer's handler before it returns,
so an event counts as published only once every consumer has applied it; nothing is held in
memory across a crash, because the outbox row stays unpublished until then) and `nats://…`
(JetStream: a stream and one durable pull consumer per name, created on start; several workers
pulling from one durable consumer share its messages like a consumer group).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from strongroom.domain.events import Event

# A consumer gets events in batches, in stream order: one write per batch, not per event.
Handler = Callable[[Sequence[Event]], Awaitable[None]]


class EventBus(ABC):
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def subscribe(self, consumer: str, handler: Handler) -> None:
        """Register a durable consumer by name before `start`. A handler that returns has
        applied the whole batch; one that raises has applied none of it for certain (some, at
        most: consumers are idempotent) and gets those events again later."""
        self.handlers[consumer] = handler

    @abstractmethod
    async def start(self) -> None:
        """Connect and create what the stream needs (idempotent)."""

    @abstractmethod
    async def publish(self, events: Sequence[Event]) -> None:
        """Return only once every event is durably in the stream (or, in memory, applied by
        every consumer); raise otherwise, and the relay publishes them again later."""

    @abstractmethod
    async def pump(self, limit: int) -> int:
        """Deliver up to `limit` waiting events to each consumer; returns how many were
        handled. In memory there is never anything waiting."""

    @abstractmethod
    async def close(self) -> None: ...


def event_bus_from_url(url: str) -> EventBus:
    if url == "memory://":
        from strongroom.adapters.events.memory import MemoryBus

        return MemoryBus()
    if url.startswith("nats://"):
        from strongroom.adapters.events.nats import NatsBus

        return NatsBus.from_url(url)
    raise ValueError(f"STRONGROOM_EVENTS_URL must be memory:// or nats://…, not {url!r}")
