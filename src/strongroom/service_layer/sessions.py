"""Console sessions for operators, as the OWASP Session Management cheat sheet has them.

A session is a 256-bit random token (the cookie's value) of which only the SHA-256 is stored.
It dies after 15 minutes without use (idle) and 12 hours after sign-in (absolute), and when
revoked. A new token replaces the old one, which stops working at once, whenever privileges
change: after the second factor, a password change (which also ends every other session and
app token of the operator) and a role change. A session that has only seen the password can do
nothing but answer the second-factor challenge: `Session.complete` says which it is.

Cookie-authenticated requests that change state carry a CSRF token: an HMAC of the session
token under a server key, so it needs no storage, changes with every rotation and cannot be
computed without the session token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update

from strongroom.adapters.db import tables as t
from strongroom.domain.audit import NO_ORIGIN, Actor, ActorType, AuditTag, Origin
from strongroom.domain.clock import Clock
from strongroom.domain.errors import AuthenticationError, ResourceMissing
from strongroom.domain.ids import new_id, token_digest
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

_s = t.operator_sessions
IDLE = timedelta(minutes=15)
STEP_UP = timedelta(minutes=5)  # how recent the second factor must be for sensitive acts
ABSOLUTE = timedelta(hours=12)
TOKEN_BYTES = 32  # 256 bits
SESSION_EXPIRED = "Your session has ended; sign in again."


@dataclass(frozen=True)
class Session:
    id: str
    operator_id: str
    created_at: datetime
    last_seen_at: datetime
    second_factor_at: datetime | None
    ip: str | None
    user_agent: str | None

    @property
    def complete(self) -> bool:
        """Password and second factor both done."""
        return self.second_factor_at is not None

    def stepped_up(self, now: datetime) -> bool:
        """A second factor within the last 5 minutes: what sensitive operations (creating
        credentials, changing gateway keys, exports, key rotation, large refunds) require."""
        return self.second_factor_at is not None and now - self.second_factor_at <= STEP_UP


@dataclass(frozen=True)
class Issued:
    token: str  # the cookie's value: shown once, never stored
    session: Session


def _session(row: Row[Any]) -> Session:
    return Session(
        id=row.id,
        operator_id=row.operator_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        second_factor_at=row.second_factor_at,
        ip=row.ip,
        user_agent=row.user_agent,
    )


class Sessions:
    def __init__(self, uow: UnitOfWork, clock: Clock, audit: AuditLog, *, csrf_key: bytes) -> None:
        self.uow = uow
        self.clock = clock
        self.audit = audit
        self._csrf_key = csrf_key

    async def start(self, operator_id: str, *, origin: Origin = NO_ORIGIN) -> Issued:
        """A session after the password alone (pending its second factor)."""
        async with self.uow.transaction() as tx:
            issued = await self._insert(tx, operator_id, self.clock.now(), None, origin)
            await tx.commit()
        return issued

    async def authenticate(self, token: str) -> Session:
        """The live session for a cookie's token, its idle clock restarted; AuthenticationError
        for an unknown, revoked, idle or too old one."""
        now = self.clock.now()
        live = (
            (_s.c.token_hash == token_digest(token))
            & _s.c.revoked_at.is_(None)
            & (_s.c.last_seen_at > now - IDLE)
            & (_s.c.created_at > now - ABSOLUTE)
        )
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            row = (
                await conn.execute(update(_s).where(live).values(last_seen_at=now).returning(*_s.c))
            ).first()
            await tx.commit()
        if row is None:
            raise AuthenticationError(SESSION_EXPIRED)
        return _session(row)

    async def rotate(
        self, token: str, *, second_factor: bool = False, origin: Origin = NO_ORIGIN
    ) -> Issued:
        """A new token for the same sign-in (its absolute limit kept); the old token is
        revoked in the same transaction. `second_factor` records that it was just passed."""
        current = await self.authenticate(token)
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            revoked = await tx.repo.conn.execute(
                update(_s)
                .where(_s.c.id == current.id, _s.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if revoked.rowcount != 1:  # rotated meanwhile by another request
                raise AuthenticationError(SESSION_EXPIRED)
            factor_at = now if second_factor else current.second_factor_at
            issued = await self._insert(
                tx, current.operator_id, current.created_at, factor_at, origin, last_seen=now
            )
            await tx.commit()
        return issued

    async def restart(self, current: Session, *, origin: Origin = NO_ORIGIN) -> Issued:
        """After a password change, which ended every session of the operator: a new token
        for the sign-in `current` belonged to, with its limits and its second factor's time
        (a password change is not a second factor)."""
        async with self.uow.transaction() as tx:
            issued = await self._insert(
                tx,
                current.operator_id,
                current.created_at,
                current.second_factor_at,
                origin,
                last_seen=self.clock.now(),
            )
            await tx.commit()
        return issued

    async def list(self, operator_id: str) -> list[Session]:
        """The operator's live sessions, newest first."""
        now = self.clock.now()
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(_s)
                .where(
                    _s.c.operator_id == operator_id,
                    _s.c.revoked_at.is_(None),
                    _s.c.last_seen_at > now - IDLE,
                    _s.c.created_at > now - ABSOLUTE,
                )
                .order_by(_s.c.created_at.desc(), _s.c.id)
            )
            return [_session(r) for r in rows]

    async def revoke(
        self, operator_id: str, session_id: str, *, origin: Origin = NO_ORIGIN
    ) -> None:
        """End one of the operator's own sessions (another device's, or this one: sign-out)."""
        async with self.uow.transaction() as tx:
            ended = await tx.repo.conn.execute(
                update(_s)
                .where(
                    _s.c.id == session_id,
                    _s.c.operator_id == operator_id,
                    _s.c.revoked_at.is_(None),
                )
                .values(revoked_at=self.clock.now())
            )
            if ended.rowcount != 1:
                raise ResourceMissing(f"No such session: '{session_id}'", param="session")
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.OPERATOR_SESSION_REVOKE,
                    actor=Actor(ActorType.USER, operator_id),
                    origin=origin,
                    resource=("session", session_id),
                )
            )
            await tx.commit()

    # --- CSRF -------------------------------------------------------------------------------------
    def csrf_token(self, token: str) -> str:
        mac = hmac.new(self._csrf_key, b"csrf " + token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def csrf_ok(self, token: str, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf_token(token), presented)

    # --- helpers ----------------------------------------------------------------------------------
    async def _insert(
        self,
        tx: Transaction,
        operator_id: str,
        created_at: datetime,
        second_factor_at: datetime | None,
        origin: Origin,
        *,
        last_seen: datetime | None = None,
    ) -> Issued:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = Session(
            id=new_id("ses"),
            operator_id=operator_id,
            created_at=created_at,
            last_seen_at=last_seen or created_at,
            second_factor_at=second_factor_at,
            ip=origin.ip,
            user_agent=None,
        )
        await tx.repo.conn.execute(
            _s.insert().values(
                id=session.id,
                token_hash=token_digest(token),
                operator_id=operator_id,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
                second_factor_at=second_factor_at,
                revoked_at=None,
                ip=origin.ip,
                user_agent=None,
            )
        )
        return Issued(token, session)
