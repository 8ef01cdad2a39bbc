"""What events mean for reporting (no I/O): which transitions are authorization attempts, the
newest state per object within a batch, and how store rows become report rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from strongroom.adapters.reporting.port import ReportName
from strongroom.domain.errors import InvalidRequest, ResourceMissing
from strongroom.domain.events import Event, EventType
from strongroom.service_layer.reporting import (
    check_range,
    parse_report_name,
    project,
    shape,
    to_csv,
)

T0 = datetime(2026, 3, 1, 23, 59, 59, 900_000, tzinfo=UTC)


def _pi(seq: int, event_type: EventType, *, capture: str = "automatic", **data: Any) -> Event:
    body = {
        "amount": 1000,
        "amount_received": 0,
        "currency": "eur",
        "status": "processing",
        "capture_method": capture,
        "gateway": "sandbox",
        "last_payment_error": None,
        "created": int(T0.timestamp()),
        **data,
    }
    return Event(
        seq, f"evt_{seq}", str(event_type), "acct_1", True, "payment_intent", "pi_1", T0, body
    )


@pytest.mark.parametrize(
    ("event_type", "capture", "approved"),
    [
        (EventType.PAYMENT_INTENT_AMOUNT_CAPTURABLE_UPDATED, "manual", True),
        (EventType.PAYMENT_INTENT_SUCCEEDED, "automatic", True),
        (EventType.PAYMENT_INTENT_SUCCEEDED, "manual", None),  # a capture, not an attempt
        (EventType.PAYMENT_INTENT_CREATED, "automatic", None),
        (EventType.PAYMENT_INTENT_REQUIRES_ACTION, "automatic", None),
        (EventType.PAYMENT_INTENT_CANCELED, "manual", None),
    ],
)
def test_which_transitions_are_authorization_attempts(
    event_type: EventType, capture: str, approved: bool | None
) -> None:
    changes = project([_pi(1, event_type, capture=capture)])
    assert [a.approved for a in changes.authorizations] == ([] if approved is None else [approved])
    assert [p.version for p in changes.payments] == [1]


def test_a_decline_carries_its_codes_and_the_payments_currency_and_gateway() -> None:
    error = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}
    changes = project(
        [
            _pi(
                4,
                EventType.PAYMENT_INTENT_PAYMENT_FAILED,
                last_payment_error=error,
                gateway="stripe",
            )
        ]
    )
    (attempt,) = changes.authorizations
    assert (attempt.approved, attempt.code, attempt.decline_code) == (
        False,
        "card_declined",
        "insufficient_funds",
    )
    assert (attempt.key, attempt.seq, attempt.currency, attempt.gateway) == (
        "evt_4",
        4,
        "eur",
        "stripe",
    )


def test_a_batch_keeps_each_objects_newest_state_and_the_highest_seq() -> None:
    newer = _pi(9, EventType.PAYMENT_INTENT_SUCCEEDED, status="succeeded", amount_received=1000)
    older = _pi(3, EventType.PAYMENT_INTENT_CREATED)
    refund = Event(
        5,
        "evt_5",
        "refund.created",
        "acct_1",
        True,
        "refund",
        "re_1",
        T0,
        {"amount": 300, "currency": "eur", "payment_intent": "pi_1", "status": "pending"},
    )
    changes = project([newer, refund, older, newer])
    assert [(p.status, p.version) for p in changes.payments] == [("succeeded", 9)]
    assert [(r.payment_intent_id, r.status, r.amount) for r in changes.refunds] == [
        ("pi_1", "pending", 300)
    ]
    assert len(changes.authorizations) == 1  # the duplicate succeeded event counts once
    assert (changes.newest_seq, changes.newest_created_at) == (9, T0)
    # The day is the UTC day of the intent's creation (whole seconds, as the API shows it).
    assert changes.payments[0].day == date(2026, 3, 1)


def test_shape_computes_rates_and_orders_rows() -> None:
    rows = shape(
        ReportName.AUTHORIZATION_RATE,
        [
            {
                "day": date(2026, 1, 2),
                "currency": "usd",
                "gateway": "sandbox",
                "attempts": 3,
                "approved": 2,
            },
            {
                "day": date(2026, 1, 1),
                "currency": "usd",
                "gateway": "sandbox",
                "attempts": 0,
                "approved": 0,
            },
        ],
    )
    assert [(r["day"], r["declined"], r["rate"]) for r in rows] == [
        ("2026-01-01", 0, None),
        ("2026-01-02", 1, 0.6667),
    ]
    reasons = shape(
        ReportName.DECLINE_REASONS,
        [
            {"code": "card_declined", "decline_code": "", "count": 1},
            {"code": "card_declined", "decline_code": "insufficient_funds", "count": 5},
        ],
    )
    assert [(r["decline_code"], r["count"]) for r in reasons] == [
        ("insufficient_funds", 5),
        (None, 1),
    ]
    assert to_csv(ReportName.DECLINE_REASONS, reasons).splitlines() == [
        "code,decline_code,count",
        "card_declined,insufficient_funds,5",
        "card_declined,,1",
    ]


def test_unknown_names_and_backwards_ranges_are_refused() -> None:
    assert parse_report_name("refund_rate") is ReportName.REFUND_RATE
    with pytest.raises(ResourceMissing, match="No such report: 'disputes'"):
        parse_report_name("disputes")
    with pytest.raises(InvalidRequest) as refused:
        check_range(date(2026, 2, 1), date(2026, 1, 31))
    assert refused.value.param == "from"
    check_range(date(2026, 1, 31), date(2026, 1, 31))
