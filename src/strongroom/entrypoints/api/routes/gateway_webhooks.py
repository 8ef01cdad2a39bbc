"""Gateways' webhooks: POST /v1/webhooks/{provider}/{endpoint_id}, where endpoint_id is the
gateway account's id; and the bank provider's, POST /v1/webhooks/plaid. No API key: the
provider's signature over the raw body is the authentication. The body size is capped by
EdgeMiddleware like every other request's. Kept out of the OpenAPI document: gateways call it,
merchants do not."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from strongroom.domain.audit import Origin
from strongroom.entrypoints.api.deps import ContainerDep
from strongroom.entrypoints.api.errors import request_id_of

router = APIRouter(prefix="/v1/webhooks", include_in_schema=False)


@router.post("/plaid")
async def receive_plaid(request: Request, container: ContainerDep) -> Response:
    """Plaid's webhooks about linked bank accounts, authenticated by the Plaid-Verification
    JWT over the raw body. 200 once verified and stored, or verified and about no item of ours
    (so Plaid stops retrying it)."""
    origin = Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )
    received = await container.inbound.receive_plaid(
        await request.body(), request.headers, origin=origin
    )
    duplicate = received is not None and received.duplicate
    body = f'{{"received":true,"duplicate":{"true" if duplicate else "false"}}}'
    return Response(body, media_type="application/json")


@router.post("/{provider}/{endpoint_id}")
async def receive(
    provider: str, endpoint_id: str, request: Request, container: ContainerDep
) -> Response:
    """200 once the delivery is verified and stored (the first time or again: a gateway's
    retry of an event we hold must stop); processing happens in the worker."""
    origin = Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )
    received = await container.inbound.receive(
        provider, endpoint_id, await request.body(), request.headers, origin=origin
    )
    body = f'{{"received":true,"duplicate":{"true" if received.duplicate else "false"}}}'
    return Response(body, media_type="application/json")
