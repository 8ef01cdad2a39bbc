"""Merchant webhooks: endpoints with their event filters, signing secrets in the Standard
Webhooks format, and the retry schedule that decides what happens after each delivery attempt.

Pure rules only: which events an endpoint takes, when the next attempt is due, when a run of
attempts is over and when an endpoint that only ever fails is switched off. Sending, signing and
storing live in the service layer and the adapters.
"""

from __future__ import annotations

import base64
import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from strongroom.domain.errors import InvalidRequest
from strongroom.domain.events import EventType

ALL_EVENTS = "*"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64 random bytes

# After the first attempt (at once), each retry waits this long after the previous failure:
# about three days in all, so a receiver that is down over a weekend still gets every event.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = 1 + len(RETRY_DELAYS)  # per run: a replay starts a new run
# ±10 %: receivers that fail together (an outage) do not all get their retries at one instant.
JITTER = 0.10
# A receiver may ask for a longer pause (Retry-After) but not park a delivery for days.
MAX_RETRY_AFTER = timedelta(hours=24)
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410
# How long a rotated-out secret keeps signing, so receivers can switch over without a gap.
ROTATION_GRACE = timedelta(hours=24)


class EndpointStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class DisabledReason(StrEnum):
    GONE = "gone"  # the receiver answered 410 Gone
    FAILING = "failing"  # every attempt failed for a whole retry schedule
    REQUESTED = "requested"  # the merchant disabled it


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class WebhookEndpoint:
    id: str
    merchant_id: str
    livemode: bool
    url: str
    enabled_events: list[str]
    description: str | None
    metadata: dict[str, str]
    status: EndpointStatus
    disabled_reason: DisabledReason | None
    created_at: datetime
    updated_at: datetime

    @property
    def enabled(self) -> bool:
        return self.status is EndpointStatus.ENABLED

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.enabled_events or event_type in self.enabled_events

    def takes(self, event_type: str, aggregate: tuple[str, str]) -> bool:
        """Whether an event goes to this endpoint: it is enabled and subscribed, and the event
        is not the news of its own disabling (which it could not receive anyway, and which
        would otherwise be the first delivery after a re-enable)."""
        if not (self.enabled and self.wants(event_type)):
            return False
        own_disabling = event_type == EventType.WEBHOOK_ENDPOINT_DISABLED and aggregate == (
            "webhook_endpoint",
            self.id,
        )
        return not own_disabling


@dataclass(frozen=True)
class Attempt:
    """One try at sending a delivery: the answer's status, or why there was none."""

    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    response_body: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class Delivery:
    """One event on its way to one endpoint. `step` counts the attempts of the current run (a
    replay starts a new run at 0); `started_at` is when the run's first attempt was made."""

    id: str
    endpoint_id: str
    merchant_id: str
    livemode: bool
    event_id: str
    event_type: str
    payload: str  # the JSON body, frozen when the delivery was made: every attempt sends it
    status: DeliveryStatus
    step: int
    attempt_count: int
    next_attempt_at: datetime | None
    started_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class NextState:
    """What an attempt leaves behind: the delivery's status and next due time, and whether the
    endpoint is to be disabled because of it (`exhausted`: the run ended in failure, which
    disables the endpoint only if nothing it was sent succeeded during the run)."""

    status: DeliveryStatus
    step: int
    next_attempt_at: datetime | None
    exhausted: bool = False
    disable: DisabledReason | None = None


def new_secret() -> str:
    """A signing secret in the Standard Webhooks format: whsec_ and base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def parse_enabled_events(values: Iterable[str]) -> list[str]:
    """The filter as stored: known event types, each once, or ["*"] alone. Raises
    InvalidRequest (param enabled_events) for an unknown type, an empty list, or "*" mixed with
    types (which would hide a typo in the others)."""
    chosen = list(dict.fromkeys(values))
    if not chosen:
        raise InvalidRequest(
            "enabled_events needs at least one event type, or '*' for all of them.",
            param="enabled_events",
        )
    if ALL_EVENTS in chosen:
        if len(chosen) > 1:
            raise InvalidRequest(
                "'*' already means every event type; send it alone.", param="enabled_events"
            )
        return chosen
    known = {str(t) for t in EventType}
    for value in chosen:
        if value not in known:
            raise InvalidRequest(
                f"Invalid enabled_events: {value!r} is not an event type.",
                param="enabled_events",
            )
    return chosen


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header as a delay (RFC 9110: delay-seconds or an HTTP date), capped at
    MAX_RETRY_AFTER; None when absent or unreadable (the schedule then applies alone)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        delay = timedelta(seconds=int(text[:9]))  # nine digits: years, and never an overflow
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition
            when = when.replace(tzinfo=UTC)
        delay = max(when - now, timedelta(0))
    return min(delay, MAX_RETRY_AFTER)


def retry_delay(step: int, rng: random.Random) -> timedelta | None:
    """The wait after the `step`-th failed attempt of a run (1-based), jittered; None once the
    schedule is used up."""
    if step > len(RETRY_DELAYS):
        return None
    return RETRY_DELAYS[step - 1] * rng.uniform(1 - JITTER, 1 + JITTER)


def after_attempt(
    step: int,
    attempt: Attempt,
    *,
    retry_after: timedelta | None,
    rng: random.Random,
) -> NextState:
    """The state after the `step`-th attempt of a run (1-based) ended as `attempt` did.

    2xx delivers; 410 Gone fails the delivery and disables the endpoint at once; any other
    answer or none at all retries on the schedule, waiting at least as long as Retry-After asks
    on 429 and 503 (capped), until the schedule is used up."""
    now = attempt.attempted_at
    if attempt.succeeded:
        return NextState(DeliveryStatus.SUCCEEDED, step, None)
    if attempt.status_code == GONE:
        return NextState(DeliveryStatus.FAILED, step, None, disable=DisabledReason.GONE)
    delay = retry_delay(step, rng)
    if delay is None:
        return NextState(DeliveryStatus.FAILED, step, None, exhausted=True)
    if retry_after is not None and attempt.status_code in RETRY_AFTER_STATUSES:
        delay = max(delay, retry_after)
    return NextState(DeliveryStatus.PENDING, step, now + delay)


def failing_throughout(run_started_at: datetime | None, last_success_at: datetime | None) -> bool:
    """Whether an endpoint whose delivery just used up its schedule had only failures for that
    whole run: nothing it was sent succeeded since the run's first attempt. One success in
    three days keeps it enabled: a receiver that is flaky is still a receiver."""
    if run_started_at is None:
        return False
    return last_success_at is None or last_success_at < run_started_at


def redirect_reason(location: str | None) -> str:
    return f"redirect not followed (Location: {(location or '')[:200]})"


def endpoint_data(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The endpoint as events about it carry it (never its secret)."""
    return {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "enabled_events": list(endpoint.enabled_events),
        "description": endpoint.description,
        "metadata": dict(endpoint.metadata),
        "status": str(endpoint.status),
        "disabled_reason": str(endpoint.disabled_reason) if endpoint.disabled_reason else None,
        "livemode": endpoint.livemode,
        "created": int(endpoint.created_at.timestamp()),
    }
