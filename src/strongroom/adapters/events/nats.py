"""The NATS JetStream event stream: one file-backed stream per deployment, one durable pull
consumer per subscribed name. Workers pulling from the same durable consumer share its messages,
each handled by one of them, so any number of workers can consume side by side."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

from strongroom.adapters.events.port import EventBus, Handler
from strongroom.domain.events import Event

log = structlog.get_logger(__name__)

DEFAULT_STREAM = "STRONGROOM"
# JetStream's answer when a stream exists with another configuration: update it instead.
STREAM_NAME_IN_USE = 10058
# Stream and consumer names become subject tokens and file names on the server.
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
LONGEST_NAK_DELAY = 300.0


class PublishError(Exception):
    """Some events of a batch were not acknowledged by the stream; the relay publishes the
    batch again (JetStream drops the copies it already has, by event id)."""


@dataclass(frozen=True)
class NatsOptions:
    """What a `nats://` URL says. Times are in seconds."""

    server: str = "nats://127.0.0.1:4222"
    stream: str = DEFAULT_STREAM
    # Re-publications within this window are dropped by event id: it must outlast the
    # relay's lease, so that a relay taking over a dead one's batch adds no copies.
    duplicate_window: float = 120.0
    # A fetched message not acked within this is given to another worker: longer than a
    # pump's batch takes to handle, or batches get handled twice.
    ack_wait: float = 60.0
    # A failed event waits this long before its first retry, doubling each time after.
    nak_delay: float = 5.0
    # How long a pump waits for messages when none are waiting.
    fetch_wait: float = 0.5
    # How long publish waits for the stream's acknowledgements.
    publish_timeout: float = 10.0
    connect_timeout: float = 5.0

    @classmethod
    def from_url(cls, url: str) -> NatsOptions:
        """`nats://host:port[?stream=NAME&ack_wait=S&nak_delay=S&fetch_wait=S&
        duplicate_window=S&publish_timeout=S]`; raises ValueError on anything else."""
        parts = urlsplit(url)
        if parts.scheme != "nats" or not parts.netloc:
            raise ValueError("events URL must look like nats://host:4222[?stream=NAME]")
        pairs = parse_qs(parts.query, keep_blank_values=True)
        query = {key: values[-1] for key, values in pairs.items()}
        stream = query.pop("stream", DEFAULT_STREAM)
        seconds: dict[str, float] = {}
        for key in ("ack_wait", "nak_delay", "fetch_wait", "duplicate_window", "publish_timeout"):
            if key in query:
                try:
                    seconds[key] = float(query.pop(key))
                except ValueError:
                    seconds[key] = math.nan  # refused just below, with the others
                if not math.isfinite(seconds[key]):
                    raise ValueError(f"events URL option {key} must be a number of seconds")
        if query:
            raise ValueError(f"unknown events URL options: {', '.join(sorted(query))}")
        options = cls(server=f"{parts.scheme}://{parts.netloc}", stream=stream, **seconds)
        options.validate()
        return options

    def validate(self) -> None:
        if not NAME.fullmatch(self.stream):
            raise ValueError("stream name must be 1-64 letters, digits, '_' or '-'")
        if self.ack_wait <= 0 or self.fetch_wait <= 0 or self.publish_timeout <= 0:
            raise ValueError("ack_wait, fetch_wait and publish_timeout must be positive")
        if self.nak_delay < 0 or self.duplicate_window <= 0:
            raise ValueError("nak_delay must not be negative, duplicate_window must be positive")


class NatsBus(EventBus):
    """Events go to `<stream>.events.<event type>` with the event id as `Nats-Msg-Id`, so the
    stream keeps one copy of each however often the relay publishes it. `pump` pulls from each
    subscribed consumer and hands each consumer's pull to its handler as one batch. If the
    batch fails, each of its events is tried alone, so one failing event is naked (and retried
    with a growing delay) without holding up the events beside it."""

    def __init__(self, options: NatsOptions | None = None) -> None:
        super().__init__()
        self.options = options or NatsOptions()
        self.options.validate()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pullers: dict[str, JetStreamContext.PullSubscription] = {}
        self._starting = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> NatsBus:
        return cls(NatsOptions.from_url(url))

    @property
    def stream(self) -> str:
        return self.options.stream

    @property
    def subjects(self) -> str:
        """Every subject the stream captures."""
        return f"{self.stream}.events.>"

    def subject(self, event: Event) -> str:
        return f"{self.stream}.events.{event.type}"

    async def start(self) -> None:
        """Connect, then create or update the stream and each subscribed durable consumer.
        JetStream answers a create that matches what exists with success, so any number of
        workers may start at once; publish and pump start the bus themselves if need be."""
        async with self._starting:
            if self._js is not None:
                return
            for consumer in self.handlers:
                if not NAME.fullmatch(consumer):
                    raise ValueError(f"consumer name {consumer!r} is not a valid NATS name")
            nc = await nats.connect(
                self.options.server,
                connect_timeout=self.options.connect_timeout,
                name=f"strongroom-{self.stream}",
            )
            try:
                js = nc.jetstream(timeout=self.options.publish_timeout)
                await self._ensure_stream(js)
                pullers = {}
                for consumer in self.handlers:
                    await js.add_consumer(self.stream, self._consumer_config(consumer))
                    pullers[consumer] = await js.pull_subscribe_bind(
                        durable=consumer, stream=self.stream
                    )
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js, self._pullers = nc, js, pullers

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=[self.subjects],
            storage=StorageType.FILE,
            duplicate_window=self.options.duplicate_window,
        )
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)

    def _consumer_config(self, consumer: str) -> ConsumerConfig:
        # A consumer made after events were published still gets them all (deliver all), and
        # an event is never given up on (max_deliver -1): a handler bug is fixed and deployed,
        # and the waiting events then apply.
        return ConsumerConfig(
            durable_name=consumer,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.options.ack_wait,
            max_deliver=-1,
            filter_subject=self.subjects,
        )

    async def publish(self, events: Sequence[Event]) -> None:
        """Send the batch in order, then wait for every acknowledgement at once; raises
        PublishError when any is missing or refused."""
        if not events:
            return
        js = await self._started()
        timeout = self.options.publish_timeout
        acks: list[asyncio.Future[PubAck]] = []
        # Queued one after another, so the stream stores them in the relay's (commit) order.
        for event in events:
            acks.append(
                await js.publish_async(
                    self.subject(event),
                    event.to_json(),
                    wait_stall=timeout,
                    stream=self.stream,
                    headers={"Nats-Msg-Id": event.id},
                )
            )
        results = await asyncio.gather(
            *(asyncio.wait_for(ack, timeout) for ack in acks), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise PublishError(
                f"{len(failures)} of {len(events)} events were not stored in stream "
                f"{self.stream}: {type(failures[0]).__name__}"
            ) from failures[0]

    async def pump(self, limit: int) -> int:
        """Pull up to `limit` messages for each consumer, all consumers at once, and handle
        each consumer's in stream order. Returns how many were handled and acked."""
        await self._started()
        counts = await asyncio.gather(
            *(self._pump_one(name, puller, limit) for name, puller in self._pullers.items())
        )
        return sum(counts)

    async def _pump_one(
        self, consumer: str, puller: JetStreamContext.PullSubscription, limit: int
    ) -> int:
        try:
            messages = await puller.fetch(limit, timeout=self.options.fetch_wait)
        except TimeoutError:  # nats.errors.TimeoutError or, on some paths, asyncio's own
            return 0  # nothing waiting
        handler = self.handlers[consumer]
        batch: list[tuple[Event, Msg]] = []
        for message in messages:
            try:
                batch.append((Event.from_json(message.data), message))
            except (ValueError, TypeError, KeyError):
                # No retry can decode it; keeping it would only stall the consumer.
                log.error(
                    "undecodable event dropped",
                    consumer=consumer,
                    stream_seq=message.metadata.sequence.stream,
                )
                await message.term()
        if not batch:
            return 0
        try:
            await handler([event for event, _ in batch])
        except Exception:
            log.warning("event batch failed; trying its events one by one", consumer=consumer)
            delivered = [await self._deliver(consumer, handler, e, m) for e, m in batch]
            return sum(delivered)
        await self._ack(message for _, message in batch)
        return len(batch)

    async def _ack(self, messages: Iterable[Msg]) -> None:
        # Waits for the server to record each ack, so a pump that returned never leaves a
        # handled event to be redelivered to another worker when its ack wait ends.
        timeout = self.options.publish_timeout
        await asyncio.gather(*(message.ack_sync(timeout=timeout) for message in messages))

    async def _deliver(self, consumer: str, handler: Handler, event: Event, message: Msg) -> bool:
        attempt = message.metadata.num_delivered or 1
        try:
            await handler([event])
        except Exception:
            # Ids and type only: the event's data is the merchant's, not the log's.
            log.exception(
                "event handler failed",
                consumer=consumer,
                event_id=event.id,
                event_type=event.type,
                attempt=attempt,
            )
            delay = min(self.options.nak_delay * 2 ** (attempt - 1), LONGEST_NAK_DELAY)
            await message.nak(delay=delay)
            return False
        await self._ack([message])
        return True

    async def _started(self) -> JetStreamContext:
        await self.start()
        assert self._js is not None
        return self._js

    async def close(self) -> None:
        """Stop pulling, send what is queued (acks, naks), then disconnect."""
        nc, pullers = self._nc, self._pullers
        self._nc, self._js, self._pullers = None, None, {}
        if nc is None or nc.is_closed:
            return
        # Unsubscribed rather than drained: draining a pull subscription waits for the
        # server's late "request expired" notes, which nothing reads. A message an expired
        # pull left behind goes to another worker when its ack wait ends.
        for puller in pullers.values():
            await puller.unsubscribe()
        await nc.drain()
