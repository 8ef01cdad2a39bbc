"""The audit log: recording events in the transaction of the change they describe, and serving
the log, its signed tree heads and RFC 9162 proofs.

There is one log for the installation. A merchant's key lists only its own events, but may
fetch any tree head or proof: proofs reveal hashes, never entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from strongroom.adapters.db.audit_store import AuditStore, LoggedEvent, TreeHead
from strongroom.domain import merkle
from strongroom.domain.audit import (
    NO_ORIGIN,
    SYSTEM,
    Actor,
    ActorType,
    AuditEvent,
    AuditTag,
    Origin,
    Outcome,
    pseudonym,
)
from strongroom.domain.clock import Clock
from strongroom.domain.errors import InvalidRequest, ResourceMissing
from strongroom.domain.ids import new_id
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    inclusion_path: list[bytes]


class AuditLog:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        *,
        pseudonym_key: bytes,
        payment_events: bool = True,
    ) -> None:
        self.uow = uow
        self.clock = clock
        self._pseudonym_key = pseudonym_key
        self.payment_events = payment_events

    # --- recording ------------------------------------------------------------------------------
    def pseudonym(self, value: str) -> str:
        return pseudonym(self._pseudonym_key, value)

    def event(
        self,
        tag: AuditTag,
        *,
        actor: Actor = SYSTEM,
        outcome: Outcome = Outcome.SUCCESS,
        merchant_id: str | None = None,
        livemode: bool | None = None,
        origin: Origin = NO_ORIGIN,
        resource: tuple[str, str] | None = None,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        resource_type, resource_id = resource if resource is not None else (None, None)
        return AuditEvent(
            id=new_id("aud"),
            occurred_at=self.clock.now(),
            event_type=tag,
            outcome=outcome,
            actor=actor,
            merchant_id=merchant_id,
            livemode=livemode,
            origin=origin,
            resource_type=resource_type,
            resource_id=resource_id,
            subject=subject,
            details=dict(details or {}),
        )

    def by_caller(
        self,
        caller: Caller,
        tag: AuditTag,
        *,
        resource: tuple[str, str] | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        if caller.decision is not None:
            details = {**(details or {}), "authorization": caller.decision.audit_details()}
        return self.event(
            tag,
            actor=_actor(caller),
            outcome=outcome,
            merchant_id=caller.merchant_id,
            livemode=caller.livemode,
            origin=caller.origin,
            resource=resource,
            details=details,
        )

    async def record_alone(self, event: AuditEvent) -> None:
        """For events with no change to ride along with (a refused login, a read of the log)."""
        async with self.uow.transaction() as tx:
            await tx.repo.add_audit_event(event)
            await tx.commit()

    # --- reading --------------------------------------------------------------------------------
    async def list_events(
        self, caller: Caller, *, limit: int, starting_after: str | None
    ) -> tuple[list[LoggedEvent], bool]:
        """The caller's own events in the caller's mode (a test key never sees live events),
        newest first, `has_more` as in every Stripe list."""
        async with self.uow.reading() as repo:
            store = AuditStore(repo.conn)
            before = None
            if starting_after is not None:
                cursor = await store.event(caller.merchant_id, caller.livemode, starting_after)
                if cursor is None:
                    raise ResourceMissing(
                        f"No such audit event: '{starting_after}'", param="starting_after"
                    )
                before = cursor.seq
            rows = await store.events(
                caller.merchant_id, caller.livemode, limit=limit + 1, before_seq=before
            )
        await self._record_read(caller, "events")
        return rows[:limit], len(rows) > limit

    async def tree_head(self, caller: Caller, tree_size: int | None = None) -> tuple[TreeHead, str]:
        """The latest signed tree head, or the one of exactly `tree_size`, with the Ed25519
        public key (hex) that signed it."""
        async with self.uow.reading() as repo:
            store = AuditStore(repo.conn)
            head = await store.head(tree_size)
            public_key = await store.public_key(head.key_id) if head is not None else ""
        await self._record_read(caller, "tree_head")
        if head is None:
            which = "yet" if tree_size is None else f"of size {tree_size}"
            raise ResourceMissing(f"No signed tree head {which}.", param="tree_size")
        return head, public_key

    async def inclusion(
        self, caller: Caller, event_id: str, tree_size: int | None
    ) -> InclusionProof:
        async with self.uow.reading() as repo:
            store = AuditStore(repo.conn)
            logged = await store.event(caller.merchant_id, caller.livemode, event_id)
            if logged is None:
                raise ResourceMissing(f"No such audit event: '{event_id}'", param="id")
            if logged.leaf_index is None:
                raise InvalidRequest(
                    "This event is not in the tree yet; the sequencer adds it within seconds.",
                    code="audit_event_pending",
                )
            size = await self._signed_size(store, tree_size)
            if logged.leaf_index >= size:
                raise InvalidRequest(
                    f"The event's leaf_index is {logged.leaf_index}; tree_size must exceed it.",
                    param="tree_size",
                )
            nodes = await store.nodes(merkle.inclusion_nodes(logged.leaf_index, size))
        await self._record_read(caller, "inclusion_proof")
        path = merkle.inclusion_proof(logged.leaf_index, size, lambda lv, ix: nodes[(lv, ix)])
        return InclusionProof(logged.leaf_index, size, path)

    async def consistency(self, caller: Caller, first: int, second: int) -> list[bytes]:
        if not 0 < first <= second:
            raise InvalidRequest(
                "Consistency needs 0 < first <= second.", param="first" if first <= 0 else "second"
            )
        async with self.uow.reading() as repo:
            store = AuditStore(repo.conn)
            await self._signed_size(store, first)
            await self._signed_size(store, second)
            nodes = await store.nodes(merkle.consistency_nodes(first, second))
        await self._record_read(caller, "consistency_proof")
        return merkle.consistency_proof(first, second, lambda lv, ix: nodes[(lv, ix)])

    async def _signed_size(self, store: AuditStore, tree_size: int | None) -> int:
        """`tree_size`, checked to be a size some signed tree head has (default: the latest), so
        every proof served can be checked against a signature."""
        head = await store.head(tree_size)
        if head is None:
            raise InvalidRequest(
                f"No signed tree head has tree_size {tree_size}."
                if tree_size is not None
                else "No signed tree head yet.",
                param="tree_size",
            )
        return head.tree_size

    async def _record_read(self, caller: Caller, what: str) -> None:
        await self.record_alone(
            self.by_caller(caller, AuditTag.AUDIT_LOG_READ, details={"read": what})
        )


def _actor(caller: Caller) -> Actor:
    """An operator in the console, else the API key of the request; a caller with neither is
    the CLI on the host."""
    if caller.operator_id is not None:
        return Actor(ActorType.USER, caller.operator_id)
    if caller.key_id is not None:
        return Actor(ActorType.API_KEY, caller.key_id)
    return SYSTEM
