"""The webhook rules without I/O: the retry schedule and its jitter, Retry-After, what 2xx, 3xx,
410 and the rest lead to, when an endpoint counts as failing throughout, event filters, the
secret format, and the Standard Webhooks headers with one signature per active secret."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from strongroom.domain.errors import InvalidRequest
from strongroom.domain.events import EventType
from strongroom.domain.webhooks import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    Attempt,
    DeliveryStatus,
    DisabledReason,
    EndpointStatus,
    WebhookEndpoint,
    after_attempt,
    failing_throughout,
    new_secret,
    parse_enabled_events,
    parse_retry_after,
)
from strongroom.service_layer.webhooks import signature_headers

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Fixed(random.Random):
    """An RNG whose uniform() always lands on one end of the range (or its middle)."""

    def __init__(self, end: str) -> None:
        super().__init__(0)
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return {"low": a, "high": b, "mid": (a + b) / 2}[self.end]


def _failed(status: int | None = 500, at: datetime = NOW) -> Attempt:
    return Attempt(at, status, None if status else "timed out", 12, None)


def test_the_schedule_is_ten_attempts_over_about_three_days() -> None:
    assert MAX_ATTEMPTS == 10
    assert RETRY_DELAYS[0] == timedelta(seconds=5)
    assert RETRY_DELAYS[-1] == timedelta(hours=24)
    assert timedelta(days=3) < sum(RETRY_DELAYS, timedelta()) < timedelta(days=3, hours=4)


def test_walking_the_schedule_waits_each_delay_then_gives_up() -> None:
    rng = Fixed("mid")
    at = NOW
    for step, delay in enumerate(RETRY_DELAYS, start=1):
        state = after_attempt(step, _failed(at=at), retry_after=None, rng=rng)
        assert state.status is DeliveryStatus.PENDING
        assert state.next_attempt_at == at + delay
        at = state.next_attempt_at
    last = after_attempt(MAX_ATTEMPTS, _failed(at=at), retry_after=None, rng=rng)
    assert last.status is DeliveryStatus.FAILED
    assert last.exhausted
    assert last.next_attempt_at is None
    assert last.disable is None  # whether to disable depends on the endpoint's last success


@pytest.mark.parametrize(("end", "factor"), [("low", 0.9), ("high", 1.1)])
def test_jitter_is_ten_percent_either_way(end: str, factor: float) -> None:
    state = after_attempt(4, _failed(), retry_after=None, rng=Fixed(end))
    assert state.next_attempt_at == NOW + RETRY_DELAYS[3] * factor


def test_jitter_spreads_receivers_that_failed_together() -> None:
    rng = random.Random(7)
    times = {
        after_attempt(2, _failed(), retry_after=None, rng=rng).next_attempt_at for _ in range(20)
    }
    assert len(times) == 20
    assert all(
        NOW + timedelta(minutes=4.5) <= t <= NOW + timedelta(minutes=5.5)
        for t in times
        if t is not None
    )


def test_success_and_gone() -> None:
    ok = after_attempt(3, Attempt(NOW, 204, None, 5, ""), retry_after=None, rng=Fixed("mid"))
    assert (ok.status, ok.next_attempt_at, ok.disable) == (DeliveryStatus.SUCCEEDED, None, None)
    gone = after_attempt(1, _failed(410), retry_after=None, rng=Fixed("mid"))
    assert gone.status is DeliveryStatus.FAILED
    assert gone.disable is DisabledReason.GONE
    assert gone.next_attempt_at is None


@pytest.mark.parametrize("status", [None, 301, 302, 400, 404, 500, 502])
def test_anything_else_is_retried(status: int | None) -> None:
    state = after_attempt(1, _failed(status), retry_after=None, rng=Fixed("mid"))
    assert state.status is DeliveryStatus.PENDING
    assert state.next_attempt_at == NOW + RETRY_DELAYS[0]


def test_retry_after_takes_the_later_of_it_and_the_schedule_on_429_and_503() -> None:
    rng = Fixed("mid")
    longer = after_attempt(1, _failed(429), retry_after=timedelta(minutes=2), rng=rng)
    assert longer.next_attempt_at == NOW + timedelta(minutes=2)
    shorter = after_attempt(6, _failed(503), retry_after=timedelta(minutes=2), rng=rng)
    assert shorter.next_attempt_at == NOW + RETRY_DELAYS[5]
    ignored = after_attempt(1, _failed(500), retry_after=timedelta(hours=1), rng=rng)
    assert ignored.next_attempt_at == NOW + RETRY_DELAYS[0]
    # A Retry-After never revives a delivery whose schedule is over.
    over = after_attempt(MAX_ATTEMPTS, _failed(503), retry_after=timedelta(hours=1), rng=rng)
    assert over.status is DeliveryStatus.FAILED


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        (format_datetime(NOW + timedelta(hours=2), usegmt=True), timedelta(hours=2)),
        (format_datetime(NOW - timedelta(hours=2), usegmt=True), timedelta(0)),
        ("99999999999999999999", timedelta(hours=24)),
        (format_datetime(NOW + timedelta(days=9), usegmt=True), timedelta(hours=24)),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),
        (None, None),
    ],
)
def test_retry_after_parsing(header: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_failing_throughout_means_no_success_since_the_run_began() -> None:
    began = NOW - timedelta(days=3)
    assert failing_throughout(began, None)
    assert failing_throughout(began, began - timedelta(seconds=1))
    assert not failing_throughout(began, began + timedelta(hours=30))
    assert not failing_throughout(None, None)


def test_enabled_events() -> None:
    assert parse_enabled_events(["*"]) == ["*"]
    assert parse_enabled_events(["refund.created", "refund.created", "customer.created"]) == [
        "refund.created",
        "customer.created",
    ]
    for bad in (["refund.exploded"], [], ["*", "refund.created"]):
        with pytest.raises(InvalidRequest) as raised:
            parse_enabled_events(bad)
        assert raised.value.param == "enabled_events"


def _endpoint(
    events: list[str], status: EndpointStatus = EndpointStatus.ENABLED
) -> WebhookEndpoint:
    return WebhookEndpoint(
        id="we_1",
        merchant_id="acct_1",
        livemode=False,
        url="https://example.com/hooks",
        enabled_events=events,
        description=None,
        metadata={},
        status=status,
        disabled_reason=None,
        created_at=NOW,
        updated_at=NOW,
    )


def test_which_events_an_endpoint_takes() -> None:
    pi = ("payment_intent", "pi_1")
    assert _endpoint(["*"]).takes("refund.created", pi)
    assert _endpoint(["refund.created"]).takes("refund.created", pi)
    assert not _endpoint(["refund.created"]).takes("refund.failed", pi)
    assert not _endpoint(["*"], EndpointStatus.DISABLED).takes("refund.created", pi)
    disabled = str(EventType.WEBHOOK_ENDPOINT_DISABLED)
    assert not _endpoint(["*"]).takes(disabled, ("webhook_endpoint", "we_1"))  # its own
    assert _endpoint(["*"]).takes(disabled, ("webhook_endpoint", "we_2"))  # another's


def test_secrets_are_standard_webhooks_secrets_and_all_different() -> None:
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_headers_carry_one_signature_per_secret_each_verifying_alone() -> None:
    old, new, stranger = new_secret(), new_secret(), new_secret()
    now = datetime.now(UTC)  # the library checks the timestamp against the real clock
    payload = '{"id":"evt_1","object":"event"}'
    headers = signature_headers("evt_1", now, payload, [new, old])

    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["content-type"] == "application/json"
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(payload, headers) == {"id": "evt_1", "object": "event"}
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(payload, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(payload.replace("evt_1", "evt_2"), headers)
