"""The embedded event stream: publishing hands each event to every consumer in turn."""

from __future__ import annotations

from collections.abc import Sequence

from strongroom.adapters.events.port import EventBus
from strongroom.domain.events import Event


class MemoryBus(EventBus):
    async def start(self) -> None:
        return None

    async def publish(self, events: Sequence[Event]) -> None:
        # The relay's batch to each consumer in turn, stopping at the first failure: the relay
        # marks nothing published, so every consumer sees these events again (and skips those
        # it has applied).
        for handler in self.handlers.values():
            await handler(events)

    async def pump(self, limit: int) -> int:
        return 0

    async def close(self) -> None:
        return None
