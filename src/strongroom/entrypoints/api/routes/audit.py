"""/v1/audit: the tamper-evident log, its signed tree heads and RFC 9162 proofs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from strongroom.adapters.db.audit_store import LoggedEvent, TreeHead
from strongroom.domain.audit import iso_utc
from strongroom.entrypoints.api.deps import CallerDep, ContainerDep, action
from strongroom.entrypoints.api.routes._docs import READ, errors
from strongroom.entrypoints.api.schemas import (
    NO_NUL,
    AuditEventList,
    AuditEventOut,
    ConsistencyProofOut,
    InclusionProofOut,
    PathId,
    TreeHeadOut,
)

router = APIRouter(prefix="/v1/audit", tags=["audit"])

TreeSize = Annotated[int | None, Query(ge=1, le=2**62, description="A signed tree head's size.")]


def _json(
    model: AuditEventList | TreeHeadOut | InclusionProofOut | ConsistencyProofOut,
) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _event_out(logged: LoggedEvent) -> AuditEventOut:
    e = logged.event
    resource = (
        {"type": e.resource_type, "id": e.resource_id} if e.resource_type is not None else None
    )
    return AuditEventOut(
        id=e.id,
        type=str(e.event_type),
        outcome=str(e.outcome),
        occurred_at=iso_utc(e.occurred_at),
        actor={"type": str(e.actor.type), "id": e.actor.id},
        origin={"ip": e.origin.ip, "request_id": e.origin.request_id},
        resource=resource,
        subject=e.subject,
        details=e.details,
        livemode=e.livemode,
        entry=e.entry().decode(),
        leaf_index=logged.leaf_index,
        leaf_hash=logged.leaf_hash.hex() if logged.leaf_hash is not None else None,
    )


@router.get(
    "/events",
    response_model=AuditEventList,
    responses=errors(*READ),
    openapi_extra=action("audit.read"),
)
async def list_events(
    caller: CallerDep,
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    starting_after: Annotated[
        str | None, Query(min_length=1, max_length=40, pattern=NO_NUL)
    ] = None,
) -> Response:
    """This merchant's events, newest first."""
    items, has_more = await container.audit.list_events(
        caller, limit=limit, starting_after=starting_after
    )
    return _json(
        AuditEventList(
            url="/v1/audit/events", has_more=has_more, data=[_event_out(i) for i in items]
        )
    )


def _head_out(signed: tuple[TreeHead, str]) -> TreeHeadOut:
    head, public_key = signed
    return TreeHeadOut(
        tree_size=head.tree_size,
        root_hash=head.root_hash.hex(),
        timestamp=head.timestamp_ms,
        key_id=head.key_id,
        public_key=public_key,
        signature=head.signature.hex(),
    )


@router.get(
    "/tree_heads/latest",
    response_model=TreeHeadOut,
    responses=errors(*READ),
    openapi_extra=action("audit.read"),
)
async def latest_tree_head(caller: CallerDep, container: ContainerDep) -> Response:
    return _json(_head_out(await container.audit.tree_head(caller)))


@router.get(
    "/tree_heads",
    response_model=TreeHeadOut,
    responses=errors(*READ),
    openapi_extra=action("audit.read"),
)
async def tree_head(
    caller: CallerDep,
    container: ContainerDep,
    tree_size: Annotated[int, Query(ge=1, le=2**62)],
) -> Response:
    """The signed tree head of exactly `tree_size` entries."""
    return _json(_head_out(await container.audit.tree_head(caller, tree_size)))


@router.get(
    "/events/{event_id}/proof",
    response_model=InclusionProofOut,
    responses=errors(*READ),
    openapi_extra=action("audit.read"),
)
async def inclusion_proof(
    event_id: PathId, caller: CallerDep, container: ContainerDep, tree_size: TreeSize = None
) -> Response:
    """RFC 9162 inclusion proof of the event in the tree of `tree_size` (default: latest)."""
    proof = await container.audit.inclusion(caller, event_id, tree_size)
    return _json(
        InclusionProofOut(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            inclusion_path=[h.hex() for h in proof.inclusion_path],
        )
    )


@router.get(
    "/consistency",
    response_model=ConsistencyProofOut,
    responses=errors(*READ),
    openapi_extra=action("audit.read"),
)
async def consistency_proof(
    caller: CallerDep,
    container: ContainerDep,
    first: Annotated[int, Query(ge=1, le=2**62)],
    second: Annotated[int, Query(ge=1, le=2**62)],
) -> Response:
    """RFC 9162 consistency proof between two signed tree heads."""
    path = await container.audit.consistency(caller, first, second)
    return _json(
        ConsistencyProofOut(first=first, second=second, consistency_path=[h.hex() for h in path])
    )
