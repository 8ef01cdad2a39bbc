"""Tokens for apps acting for an operator (a CLI, a mobile app): a short-lived access token and
a refresh token that can be exchanged once for a new pair, as RFC 9700 section 4.14 describes
refresh token rotation.

Each grant (made after a recent second factor) starts a family, which ends 30 days later
whatever its refreshes. Exchanging
the family's current refresh token marks it used and issues the next pair; presenting a used
refresh token again means it was copied, so the whole family is revoked, the newer tokens
included, and the answer is `invalid_grant`. Tokens are 256-bit random strings stored only as
SHA-256 hashes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update

from strongroom.adapters.db import tables as t
from strongroom.domain.audit import NO_ORIGIN, Actor, ActorType, AuditTag, Origin, Outcome
from strongroom.domain.clock import Clock
from strongroom.domain.errors import AuthenticationError, InvalidRequest
from strongroom.domain.ids import new_id, token_digest
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

_k = t.operator_tokens
ACCESS_LIFETIME = timedelta(minutes=10)
REFRESH_LIFETIME = timedelta(days=14)
FAMILY_LIFETIME = timedelta(days=30)  # a grant's refreshes end then: sign in and grant again
INVALID_GRANT = "invalid_grant"


class Kind(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int  # the access token's lifetime, in seconds
    family_id: str


def _invalid_grant() -> InvalidRequest:
    return InvalidRequest("The refresh token is invalid, expired or revoked.", code=INVALID_GRANT)


class AppTokens:
    def __init__(self, uow: UnitOfWork, clock: Clock, audit: AuditLog) -> None:
        self.uow = uow
        self.clock = clock
        self.audit = audit

    async def grant(self, operator_id: str, *, origin: Origin = NO_ORIGIN) -> TokenPair:
        """A new family, for an operator who has just passed a second factor."""
        async with self.uow.transaction() as tx:
            ends = self.clock.now() + FAMILY_LIFETIME
            pair = await self._pair(tx, operator_id, new_id("tfam"), ends)
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.OPERATOR_TOKEN_GRANT,
                    actor=Actor(ActorType.USER, operator_id),
                    origin=origin,
                    resource=("operator", operator_id),
                    details={"family": pair.family_id},
                )
            )
            await tx.commit()
        return pair

    async def refresh(self, refresh_token: str, *, origin: Origin = NO_ORIGIN) -> TokenPair:
        """The next pair for the family's current refresh token; InvalidRequest
        `invalid_grant` otherwise, and for a reused one the family is revoked first."""
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            row = (
                await conn.execute(
                    select(_k).where(
                        _k.c.token_hash == token_digest(refresh_token), _k.c.kind == Kind.REFRESH
                    )
                )
            ).first()
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                raise _invalid_grant()
            if row.family_expires_at <= now:
                raise _invalid_grant()
            # Conditional on unused: of two racing exchanges of one token, one wins and the
            # other is a reuse.
            taken = await conn.execute(
                update(_k).where(_k.c.id == row.id, _k.c.used_at.is_(None)).values(used_at=now)
            )
            if taken.rowcount == 1:
                pair = await self._pair(tx, row.operator_id, row.family_id, row.family_expires_at)
                await tx.commit()
                return pair
            await conn.execute(
                update(_k)
                .where(_k.c.family_id == row.family_id, _k.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.OPERATOR_TOKEN_REUSE,
                    actor=Actor(ActorType.ANONYMOUS),
                    outcome=Outcome.FAILURE,
                    origin=origin,
                    resource=("operator", row.operator_id),
                    details={"family": row.family_id},
                )
            )
            await tx.commit()
        raise _invalid_grant()

    async def authenticate(self, access_token: str) -> str:
        """The operator an access token acts for; AuthenticationError when it is unknown,
        expired or its family revoked."""
        async with self.uow.reading() as repo:
            row = (
                await repo.conn.execute(
                    select(_k.c.operator_id, _k.c.expires_at, _k.c.revoked_at).where(
                        _k.c.token_hash == token_digest(access_token), _k.c.kind == Kind.ACCESS
                    )
                )
            ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= self.clock.now():
            raise AuthenticationError("The access token is invalid or expired.")
        operator_id: str = row.operator_id
        return operator_id

    async def _pair(
        self, tx: Transaction, operator_id: str, family_id: str, family_ends: datetime
    ) -> TokenPair:
        now = self.clock.now()
        tokens = {kind: secrets.token_urlsafe(32) for kind in Kind}
        lifetimes = {Kind.ACCESS: ACCESS_LIFETIME, Kind.REFRESH: REFRESH_LIFETIME}
        await tx.repo.conn.execute(
            _k.insert(),
            [
                {
                    "id": new_id("tok"),
                    "token_hash": token_digest(token),
                    "kind": kind.value,
                    "family_id": family_id,
                    "operator_id": operator_id,
                    "created_at": now,
                    "expires_at": min(now + lifetimes[kind], family_ends),
                    "used_at": None,
                    "revoked_at": None,
                    "family_expires_at": family_ends,
                }
                for kind, token in tokens.items()
            ],
        )
        return TokenPair(
            access_token=tokens[Kind.ACCESS],
            refresh_token=tokens[Kind.REFRESH],
            expires_in=int(ACCESS_LIFETIME.total_seconds()),
            family_id=family_id,
        )
