"""Request bodies and response objects of /v1/webhook_endpoints and /v1/webhook_deliveries, and
the functions that shape webhook objects for the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt

from strongroom.domain.events import EventType
from strongroom.domain.webhooks import (
    ALL_EVENTS,
    ROTATION_GRACE,
    Attempt,
    Delivery,
    WebhookEndpoint,
    endpoint_data,
)
from strongroom.entrypoints.api.schemas import NO_NUL, Body, Metadata

Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        pattern=NO_NUL,
        description="Where events are POSTed: http or https, never a private address.",
    ),
]
# Checked against the event types by the service (one message for every way to get it wrong);
# the enum tells OpenAPI clients the values.
EventName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=NO_NUL,
        json_schema_extra={"enum": [*(str(e) for e in EventType), ALL_EVENTS]},
    ),
]
EnabledEvents = Annotated[
    list[EventName],
    Field(
        min_length=1,
        max_length=len(EventType) + 1,
        description="The event types to send, or ['*'] for all of them.",
    ),
]
Description = Annotated[str, Field(max_length=1000, pattern=NO_NUL)]


class WebhookEndpointCreate(Body):
    url: Url
    enabled_events: EnabledEvents
    description: Description | None = None
    metadata: Metadata = Field(default_factory=dict)


class WebhookEndpointUpdate(Body):
    url: Url | None = None
    enabled_events: EnabledEvents | None = None
    description: Description | None = None
    metadata: Metadata | None = None
    disabled: StrictBool | None = Field(
        None, description="true disables the endpoint; false re-enables it."
    )


class WebhookSecretRotate(Body):
    expires_in: (
        Annotated[
            StrictInt,
            Field(
                ge=0,
                le=int(ROTATION_GRACE.total_seconds()),
                description="Seconds the current secrets keep signing (default and most 86400; "
                "0: stop at once).",
            ),
        ]
        | None
    ) = None


# --- responses ------------------------------------------------------------------------------------


class WebhookEndpointOut(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    enabled_events: list[str]
    description: str | None
    metadata: dict[str, str]
    status: Literal["enabled", "disabled"]
    disabled_reason: Literal["gone", "failing", "requested"] | None = Field(
        description="Why it is disabled: the receiver answered 410 Gone, every attempt failed "
        "for three days, or you disabled it."
    )
    livemode: bool
    created: int


class WebhookEndpointWithSecret(WebhookEndpointOut):
    secret: str = Field(
        description="The signing secret (Standard Webhooks, whsec_…). Shown only in this "
        "response: store it now."
    )


class WebhookEndpointList(BaseModel):
    object: Literal["list"] = "list"
    url: str
    has_more: bool
    data: list[WebhookEndpointOut]


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    deleted: Literal[True] = True


class WebhookAttemptOut(BaseModel):
    attempted_at: int
    status_code: int | None = Field(description="The receiver's answer; null when it gave none.")
    error: str | None = Field(description="Why the attempt failed, when no 2xx came back.")
    duration_ms: int
    response_body: str | None = Field(description="The start of the receiver's answer.")


class WebhookDeliveryOut(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    webhook_endpoint: str
    event: str = Field(description="The event's id; sent as webhook-id on every attempt.")
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: int | None
    delivered_at: int | None = Field(description="The latest successful attempt.")
    livemode: bool
    created: int
    attempts: list[WebhookAttemptOut] = Field(description="Oldest first.")


class WebhookDeliveryList(BaseModel):
    object: Literal["list"] = "list"
    url: str
    has_more: bool
    data: list[WebhookDeliveryOut]


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def webhook_endpoint_out(endpoint: WebhookEndpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut.model_validate(endpoint_data(endpoint))


def webhook_endpoint_with_secret(
    endpoint: WebhookEndpoint, secret: str
) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret.model_validate(endpoint_data(endpoint) | {"secret": secret})


def _attempt_out(attempt: Attempt) -> WebhookAttemptOut:
    return WebhookAttemptOut(
        attempted_at=int(attempt.attempted_at.timestamp()),
        status_code=attempt.status_code,
        error=attempt.error,
        duration_ms=attempt.duration_ms,
        response_body=attempt.response_body,
    )


def webhook_delivery_out(delivery: Delivery) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=delivery.id,
        webhook_endpoint=delivery.endpoint_id,
        event=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status.value,
        attempt_count=delivery.attempt_count,
        next_attempt_at=_ts(delivery.next_attempt_at),
        delivered_at=_ts(delivery.delivered_at),
        livemode=delivery.livemode,
        created=int(delivery.created_at.timestamp()),
        attempts=[_attempt_out(a) for a in delivery.attempts],
    )
