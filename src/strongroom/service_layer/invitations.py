"""Inviting operators (there is no self sign-up): an owner names an address and a role, the
invitee gets a single-use link by email, valid 24 hours, and chooses a password there.

Only the link token's SHA-256 is stored. Accepting checks the password first, then, in one
transaction, marks the invitation accepted (a conditional UPDATE, so a link works once even
when two tabs race) and creates the operator.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update

from strongroom.adapters.db import tables as t
from strongroom.adapters.email import Mailer, Message
from strongroom.domain.audit import NO_ORIGIN, Actor, ActorType, AuditTag, Origin
from strongroom.domain.clock import Clock
from strongroom.domain.errors import InvalidRequest, PermissionDenied
from strongroom.domain.ids import new_id, token_digest
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.operators import (
    Operator,
    Operators,
    Role,
    normalize_email,
    parse_role,
)
from strongroom.service_layer.unit_of_work import UnitOfWork

_i = t.operator_invitations
LIFETIME = timedelta(hours=24)
LINK_INVALID = "This invitation link is invalid, used or expired; ask for a new one."


@dataclass(frozen=True)
class Invitation:
    id: str
    merchant_id: str
    email: str
    role: Role
    expires_at: datetime


def _invitation(row: Row[Any]) -> Invitation:
    return Invitation(row.id, row.merchant_id, row.email, Role(row.role), row.expires_at)


class Invitations:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        operators: Operators,
        mailer: Mailer,
        audit: AuditLog,
        *,
        public_url: str,
    ) -> None:
        self.uow = uow
        self.clock = clock
        self.operators = operators
        self.mailer = mailer
        self.audit = audit
        self.public_url = public_url.rstrip("/")

    async def invite(
        self, inviter_id: str, email: str, role: str, *, origin: Origin = NO_ORIGIN
    ) -> Invitation:
        """An owner invites `email` as `role` to their merchant; the link goes by email."""
        inviter = await self.operators.get(inviter_id)
        if inviter.role is not Role.OWNER:
            raise PermissionDenied("Only an owner can invite operators.")
        address = normalize_email(email)
        kind = parse_role(role)
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        invitation = Invitation(new_id("inv"), inviter.merchant_id, address, kind, now + LIFETIME)
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            # Sent whether or not the address already has an account (at this merchant or
            # another): what an owner sees must not say which. Accepting refuses a taken one.
            await conn.execute(
                _i.insert().values(
                    id=invitation.id,
                    merchant_id=invitation.merchant_id,
                    email=address,
                    role=kind.value,
                    token_hash=token_digest(token),
                    invited_by=inviter.id,
                    created_at=now,
                    expires_at=invitation.expires_at,
                    accepted_at=None,
                )
            )
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.OPERATOR_INVITE,
                    actor=Actor(ActorType.USER, inviter.id),
                    merchant_id=inviter.merchant_id,
                    origin=origin,
                    resource=("invitation", invitation.id),
                    details={"role": kind.value},
                )
            )
            await tx.commit()
        # After the commit: a link in an inbox always has its row. Were sending to fail, the
        # owner sees the error and invites again; the unsent row expires unused.
        await self.mailer.send(
            Message(
                to=address,
                subject="You are invited to a Strongroom console",
                body=(
                    f"{inviter.email} invited you to their Strongroom console as {kind.value}.\n\n"
                    f"Choose your password here within 24 hours (the link works once):\n"
                    f"{self.public_url}/console/invitations/{token}\n"
                ),
            )
        )
        return invitation

    async def pending(self, token: str) -> Invitation:
        """The invitation a link names, while it can still be accepted."""
        async with self.uow.reading() as repo:
            row = (
                await repo.conn.execute(
                    select(_i).where(
                        _i.c.token_hash == token_digest(token),
                        _i.c.accepted_at.is_(None),
                        _i.c.expires_at > self.clock.now(),
                    )
                )
            ).first()
        if row is None:
            raise InvalidRequest(LINK_INVALID, code="invitation_invalid")
        return _invitation(row)

    async def accept(self, token: str, password: str, *, origin: Origin = NO_ORIGIN) -> Operator:
        invitation = await self.pending(token)
        address, kind, hashed = await self.operators.prepare(
            invitation.email, invitation.role.value, password
        )
        async with self.uow.transaction() as tx:
            taken = await tx.repo.conn.execute(
                update(_i)
                .where(
                    _i.c.id == invitation.id,
                    _i.c.accepted_at.is_(None),
                    _i.c.expires_at > self.clock.now(),
                )
                .values(accepted_at=self.clock.now())
            )
            if taken.rowcount != 1:
                raise InvalidRequest(LINK_INVALID, code="invitation_invalid")
            operator_id = await self.operators.add(
                tx,
                invitation.merchant_id,
                address,
                kind,
                hashed,
                Actor(ActorType.ANONYMOUS),
                origin,
            )
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.OPERATOR_INVITATION_ACCEPT,
                    actor=Actor(ActorType.USER, operator_id),
                    merchant_id=invitation.merchant_id,
                    origin=origin,
                    resource=("invitation", invitation.id),
                )
            )
            await tx.commit()
        return await self.operators.get(operator_id)
