"""/v1/webhook_endpoints and /v1/webhook_deliveries: where a merchant's events are sent, and
what happened to each one.

No Idempotency-Key here: the answers to create and rotate_secret carry a signing secret, and a
stored response would keep it in clear in the database; updates and deletes are idempotent as
they are, and a replay sent twice is a delivery the receiver deduplicates by webhook-id anyway.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from strongroom.entrypoints.api.deps import CallerDep, ContainerDep, action
from strongroom.entrypoints.api.rendering import json_response
from strongroom.entrypoints.api.routes._docs import READ, WRITE, errors
from strongroom.entrypoints.api.schemas import NO_NUL, PathId
from strongroom.entrypoints.api.webhook_schemas import (
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
    WebhookSecretRotate,
    webhook_delivery_out,
    webhook_endpoint_out,
    webhook_endpoint_with_secret,
)
from strongroom.service_layer.webhooks import CreateWebhookEndpoint, UpdateWebhookEndpoint

router = APIRouter(tags=["webhook_endpoints"])

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=40, pattern=NO_NUL)]


@router.post(
    "/v1/webhook_endpoints",
    response_model=WebhookEndpointWithSecret,
    responses=errors(*WRITE),
    openapi_extra=action("webhook_endpoints.write"),
)
async def create_webhook_endpoint(
    body: WebhookEndpointCreate, caller: CallerDep, container: ContainerDep
) -> Response:
    cmd = CreateWebhookEndpoint(
        url=body.url,
        enabled_events=body.enabled_events,
        description=body.description,
        metadata=body.metadata,
    )
    created = await container.webhooks.create_endpoint(caller, cmd)
    return json_response(
        webhook_endpoint_with_secret(created.endpoint, created.secret), secret=True
    )


@router.get(
    "/v1/webhook_endpoints",
    response_model=WebhookEndpointList,
    responses=errors(*READ),
    openapi_extra=action("webhook_endpoints.read"),
)
async def list_webhook_endpoints(
    caller: CallerDep,
    container: ContainerDep,
    limit: Limit = 10,
    starting_after: Cursor = None,
) -> Response:
    items, has_more = await container.webhooks.list_endpoints(
        caller, limit=limit, starting_after=starting_after
    )
    page = WebhookEndpointList(
        url="/v1/webhook_endpoints",
        has_more=has_more,
        data=[webhook_endpoint_out(e) for e in items],
    )
    return json_response(page)


@router.get(
    "/v1/webhook_endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    responses=errors(*READ),
    openapi_extra=action("webhook_endpoints.read"),
)
async def get_webhook_endpoint(
    endpoint_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    endpoint = await container.webhooks.get_endpoint(caller, endpoint_id)
    return json_response(webhook_endpoint_out(endpoint))


@router.post(
    "/v1/webhook_endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    responses=errors(*WRITE),
    openapi_extra=action("webhook_endpoints.write"),
)
async def update_webhook_endpoint(
    endpoint_id: PathId,
    caller: CallerDep,
    container: ContainerDep,
    body: WebhookEndpointUpdate | None = None,
) -> Response:
    body = body or WebhookEndpointUpdate()
    cmd = UpdateWebhookEndpoint(
        url=body.url,
        enabled_events=body.enabled_events,
        description=body.description,
        metadata=body.metadata,
        disabled=body.disabled,
    )
    endpoint = await container.webhooks.update_endpoint(caller, endpoint_id, cmd)
    return json_response(webhook_endpoint_out(endpoint))


@router.delete(
    "/v1/webhook_endpoints/{endpoint_id}",
    response_model=WebhookEndpointDeleted,
    responses=errors(*READ),
    openapi_extra=action("webhook_endpoints.write"),
)
async def delete_webhook_endpoint(
    endpoint_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    deleted = await container.webhooks.delete_endpoint(caller, endpoint_id)
    return json_response(WebhookEndpointDeleted(id=deleted))


@router.post(
    "/v1/webhook_endpoints/{endpoint_id}/rotate_secret",
    response_model=WebhookEndpointWithSecret,
    responses=errors(*WRITE),
    openapi_extra=action("webhook_endpoints.write"),
)
async def rotate_webhook_secret(
    endpoint_id: PathId,
    caller: CallerDep,
    container: ContainerDep,
    body: WebhookSecretRotate | None = None,
) -> Response:
    seconds = body.expires_in if body is not None else None
    expires_in = timedelta(seconds=seconds) if seconds is not None else None
    rotated = await container.webhooks.rotate_secret(caller, endpoint_id, expires_in)
    return json_response(
        webhook_endpoint_with_secret(rotated.endpoint, rotated.secret), secret=True
    )


@router.get(
    "/v1/webhook_endpoints/{endpoint_id}/deliveries",
    response_model=WebhookDeliveryList,
    responses=errors(*READ),
    openapi_extra=action("webhook_endpoints.read"),
)
async def list_webhook_deliveries(
    endpoint_id: PathId,
    caller: CallerDep,
    container: ContainerDep,
    limit: Limit = 10,
    starting_after: Cursor = None,
) -> Response:
    items, has_more = await container.webhooks.list_deliveries(
        caller, endpoint_id, limit=limit, starting_after=starting_after
    )
    page = WebhookDeliveryList(
        url=f"/v1/webhook_endpoints/{endpoint_id}/deliveries",
        has_more=has_more,
        data=[webhook_delivery_out(d) for d in items],
    )
    return json_response(page)


@router.get(
    "/v1/webhook_deliveries/{delivery_id}",
    response_model=WebhookDeliveryOut,
    responses=errors(*READ),
    openapi_extra=action("webhook_endpoints.read"),
)
async def get_webhook_delivery(
    delivery_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    delivery = await container.webhooks.get_delivery(caller, delivery_id)
    return json_response(webhook_delivery_out(delivery))


@router.post(
    "/v1/webhook_deliveries/{delivery_id}/replay",
    response_model=WebhookDeliveryOut,
    responses=errors(*WRITE),
    openapi_extra=action("webhook_endpoints.write"),
)
async def replay_webhook_delivery(
    delivery_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    delivery = await container.webhooks.replay(caller, delivery_id)
    return json_response(webhook_delivery_out(delivery))
