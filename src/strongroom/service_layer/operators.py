"""Operators: the people who run a merchant's account, and signing them in with a password.

  create           the CLI makes a merchant's first owner (no self sign-up).
  sign_in          email and password. Ten failures in a row lock the account for 30 minutes
                   (PCI DSS v4 8.3.4), during which even the right password is refused; an
                   owner's unlock ends the lock at once. Every refusal is the same error with
                   the same cost, whether the account exists, is locked or the password is wrong:
                   an unknown address is verified against a decoy hash, so neither the answer
                   nor its timing says which. The reason goes to the audit log only.
  change_password  needs the current password; the new one must pass the policy and differ
                   from the last four.

Passwords are checked and hashed by service_layer.passwords; argon2 runs off the event loop and
outside any transaction, and the failure count is kept by one conditional UPDATE, so racing
sign-ins cannot lose a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn

from sqlalchemy import Row, case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.db import tables as t
from strongroom.domain.audit import (
    NO_ORIGIN,
    SYSTEM,
    Actor,
    ActorType,
    AuditEvent,
    AuditTag,
    Origin,
    Outcome,
)
from strongroom.domain.clock import Clock
from strongroom.domain.errors import (
    AuthenticationError,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    ResourceMissing,
)
from strongroom.domain.ids import new_id
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.login_throttle import LoginThrottle
from strongroom.service_layer.passwords import HISTORY, Passwords
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

_o = t.operators
_h = t.operator_password_history
MAX_EMAIL = 254
SIGN_IN_REFUSED = "Incorrect email or password."
WRONG_CURRENT = "The current password is not correct."


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    FINANCE = "finance"
    SUPPORT = "support"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Operator:
    id: str
    merchant_id: str
    email: str
    role: Role
    password_changed_at: datetime
    failed_sign_ins: int
    locked_until: datetime | None
    created_at: datetime

    def locked_at(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until


def _operator(row: Row[Any]) -> Operator:
    return Operator(
        id=row.id,
        merchant_id=row.merchant_id,
        email=row.email,
        role=Role(row.role),
        password_changed_at=row.password_changed_at,
        failed_sign_ins=row.failed_sign_ins,
        locked_until=row.locked_until,
        created_at=row.created_at,
    )


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidRequest(f"role must be one of: {roles}.", param="role") from None


def normalize_email(email: str) -> str:
    """Lower case, trimmed; refused unless it looks like one address (the invitation that
    proves it is delivered comes with invitations)."""
    address = email.strip().lower()
    local, at, domain = address.partition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(address) > MAX_EMAIL
        or any(c.isspace() for c in address)
    ):
        raise InvalidRequest("Enter one email address, such as name@example.com.", param="email")
    return address


class Operators:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        passwords: Passwords,
        audit: AuditLog,
        *,
        throttle: LoginThrottle | None = None,
        max_failures: int = 10,
        lockout: timedelta = timedelta(minutes=30),
    ) -> None:
        self.uow = uow
        self.throttle = throttle
        self.clock = clock
        self.passwords = passwords
        self.audit = audit
        self.max_failures = max_failures
        self.lockout = lockout

    # --- accounts ---------------------------------------------------------------------------------
    async def create(self, merchant_id: str, email: str, role: str, password: str) -> Operator:
        """An operator with a password (the CLI's first owner). Raises InvalidRequest for a bad
        address, role or password, or an address already in use."""
        address, kind, hashed = await self.prepare(email, role, password)
        async with self.uow.transaction() as tx:
            if await tx.repo.get_merchant(merchant_id) is None:
                raise ResourceMissing(f"No such merchant: '{merchant_id}'", param="merchant")
            operator_id = await self.add(tx, merchant_id, address, kind, hashed, SYSTEM)
            await tx.commit()
        return await self.get(operator_id)

    async def prepare(self, email: str, role: str, password: str) -> tuple[str, Role, str]:
        """The checked address and role and the password's hash, before any transaction (argon2
        is slow). Raises InvalidRequest."""
        address = normalize_email(email)
        kind = parse_role(role)
        self.passwords.check(password, email=address)
        return address, kind, await self.passwords.hash_async(password)

    async def add(
        self,
        tx: Transaction,
        merchant_id: str,
        address: str,
        kind: Role,
        hashed: str,
        actor: Actor,
        origin: Origin = NO_ORIGIN,
    ) -> str:
        """Insert an operator within `tx`; returns its id. InvalidRequest if the address is
        taken (the unique constraint backs this check up against a race)."""
        conn = tx.repo.conn
        if (await conn.execute(select(_o.c.id).where(_o.c.email == address))).first():
            raise InvalidRequest("An operator with this email already exists.", param="email")
        now = self.clock.now()
        operator_id = new_id("op")
        await conn.execute(
            _o.insert().values(
                id=operator_id,
                merchant_id=merchant_id,
                email=address,
                role=kind.value,
                password_hash=hashed,
                password_changed_at=now,
                failed_sign_ins=0,
                locked_until=None,
                created_at=now,
                updated_at=now,
            )
        )
        await tx.repo.add_audit_event(
            self.audit.event(
                AuditTag.OPERATOR_CREATE,
                actor=actor,
                merchant_id=merchant_id,
                origin=origin,
                resource=("operator", operator_id),
                details={"role": kind.value},
            )
        )
        return operator_id

    async def get(self, operator_id: str) -> Operator:
        async with self.uow.reading() as repo:
            row = (await repo.conn.execute(select(_o).where(_o.c.id == operator_id))).first()
        if row is None:
            raise ResourceMissing(f"No such operator: '{operator_id}'", param="operator")
        return _operator(row)

    async def _colleague(self, operator_id: str, other_id: str) -> Operator:
        """Another operator of `operator_id`'s merchant; another merchant's is answered as
        missing, exactly as an unknown id, so ids of other merchants' people reveal nothing."""
        me, other = await self.get(operator_id), await self.get(other_id)
        if other.merchant_id != me.merchant_id:
            raise ResourceMissing(f"No such operator: '{other_id}'", param="operator")
        return other

    async def list(self, merchant_id: str) -> list[Operator]:
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(_o).where(_o.c.merchant_id == merchant_id).order_by(_o.c.email)
            )
            return [_operator(r) for r in rows]

    async def change_role(
        self, owner_id: str, operator_id: str, role: str, *, origin: Origin = NO_ORIGIN
    ) -> None:
        """An owner gives another operator of the merchant a new role; that operator's sessions
        end with it, so their next request signs in again with the new role."""
        owner, target = await self.get(owner_id), await self._colleague(owner_id, operator_id)
        if owner.role is not Role.OWNER:
            raise PermissionDenied("Only an owner of this merchant can change roles.")
        if owner.id == target.id:
            raise InvalidRequest("Owners cannot change their own role.", param="role")
        kind = parse_role(role)
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            await conn.execute(
                update(_o).where(_o.c.id == target.id).values(role=kind.value, updated_at=now)
            )
            await end_access(conn, target.id, now)
            await tx.repo.add_audit_event(
                self._event(
                    target,
                    AuditTag.OPERATOR_ROLE_CHANGE,
                    origin,
                    details={"from": target.role.value, "to": kind.value},
                    actor=Actor(ActorType.USER, owner.id),
                )
            )
            await tx.commit()

    # --- signing in -------------------------------------------------------------------------------
    async def sign_in(self, email: str, password: str, *, origin: Origin = NO_ORIGIN) -> Operator:
        """The operator, once the password is right and the account not locked; otherwise
        AuthenticationError with SIGN_IN_REFUSED, whatever the reason."""
        address = email.strip().lower()[:MAX_EMAIL]
        if self.throttle is not None:
            try:
                await self.throttle.admit(origin.ip)
            except RateLimited:
                await self._audit_refusal(None, "throttled", origin, subject=address)
                raise
        async with self.uow.reading() as repo:
            row = (await repo.conn.execute(select(_o).where(_o.c.email == address))).first()
        # Verified in every case, locked or unknown included: each refusal costs the same.
        matches = await self.passwords.verify_async(
            row.password_hash if row is not None else None, password[: 4 * 1024]
        )
        now = self.clock.now()
        if (row is None or not matches) and self.throttle is not None:
            await self.throttle.failed(origin.ip, address)
        if row is None:
            await self._refused(None, "unknown_email", origin, subject=address)
        operator = _operator(row)
        if operator.locked_at(now):
            await self._refused(operator, "locked", origin)
        if not matches:
            await self._count_failure(operator, now, origin)
        values: dict[str, Any] = {"failed_sign_ins": 0, "locked_until": None, "updated_at": now}
        if self.passwords.needs_rehash(row.password_hash):
            values["password_hash"] = await self.passwords.hash_async(password)
        async with self.uow.transaction() as tx:
            # Conditional on what was verified: a lock set meanwhile by racing failures, or a
            # password changed meanwhile, refuses this sign-in instead of being undone by it.
            done = await tx.repo.conn.execute(
                update(_o)
                .where(
                    _o.c.id == operator.id,
                    _o.c.password_hash == row.password_hash,
                    _o.c.locked_until.is_(None) | (_o.c.locked_until <= now),
                )
                .values(**values)
            )
            if done.rowcount == 1:
                signed_in = self._event(operator, AuditTag.OPERATOR_SIGN_IN, origin)
                await tx.repo.add_audit_event(signed_in)
                await tx.commit()
        if done.rowcount != 1:
            await self._refused(operator, "locked", origin)
        return await self.get(operator.id)

    async def _count_failure(
        self,
        operator: Operator,
        now: datetime,
        origin: Origin,
        *,
        tag: AuditTag = AuditTag.OPERATOR_SIGN_IN,
        message: str = SIGN_IN_REFUSED,
    ) -> NoReturn:
        """One more failure in a row (restarting the count if an earlier lock has run out);
        the one that reaches the limit locks the account. Always raises."""
        expired = _o.c.locked_until.is_not(None) & (_o.c.locked_until <= now)
        failures = case((expired, 1), else_=_o.c.failed_sign_ins + 1)
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            count = (
                await conn.execute(
                    update(_o)
                    .where(_o.c.id == operator.id)
                    .values(
                        failed_sign_ins=failures,
                        locked_until=case((expired, None), else_=_o.c.locked_until),
                        updated_at=now,
                    )
                    .returning(_o.c.failed_sign_ins)
                )
            ).scalar_one()
            locks = count == self.max_failures
            if locks:
                await conn.execute(
                    update(_o).where(_o.c.id == operator.id).values(locked_until=now + self.lockout)
                )
            details = {"reason": "wrong_password", "failures": count}
            await tx.repo.add_audit_event(
                self._event(operator, tag, origin, Outcome.FAILURE, details)
            )
            if locks:
                minutes = self.lockout.total_seconds() / 60
                await tx.repo.add_audit_event(
                    self._event(
                        operator, AuditTag.OPERATOR_LOCK, origin, details={"minutes": minutes}
                    )
                )
            await tx.commit()
        raise AuthenticationError(message)

    async def _refused(
        self, operator: Operator | None, reason: str, origin: Origin, *, subject: str | None = None
    ) -> NoReturn:
        await self._audit_refusal(operator, reason, origin, subject=subject)
        raise AuthenticationError(SIGN_IN_REFUSED)

    async def _audit_refusal(
        self, operator: Operator | None, reason: str, origin: Origin, *, subject: str | None = None
    ) -> None:
        if operator is None:
            event = self.audit.event(
                AuditTag.OPERATOR_SIGN_IN,
                actor=Actor(ActorType.ANONYMOUS),
                outcome=Outcome.FAILURE,
                origin=origin,
                subject=self.audit.pseudonym(subject) if subject else None,
                details={"reason": reason},
            )
        else:
            details = {"reason": reason}
            event = self._event(
                operator, AuditTag.OPERATOR_SIGN_IN, origin, Outcome.FAILURE, details
            )
        await self.audit.record_alone(event)

    async def unlock(self, owner_id: str, operator_id: str, *, origin: Origin = NO_ORIGIN) -> None:
        """An owner ends another operator's lock of the same merchant at once."""
        owner = await self.get(owner_id)
        target = await self._colleague(owner_id, operator_id)
        if owner.role is not Role.OWNER:
            raise PermissionDenied("Only an owner of this merchant can unlock an operator.")
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            await tx.repo.conn.execute(
                update(_o)
                .where(_o.c.id == target.id)
                .values(failed_sign_ins=0, locked_until=None, updated_at=now)
            )
            await tx.repo.add_audit_event(
                self._event(
                    target,
                    AuditTag.OPERATOR_UNLOCK,
                    origin,
                    actor=Actor(ActorType.USER, owner.id),
                )
            )
            await tx.commit()

    # --- passwords --------------------------------------------------------------------------------
    async def change_password(
        self, operator_id: str, current: str, new: str, *, origin: Origin = NO_ORIGIN
    ) -> None:
        """Raises AuthenticationError when `current` is wrong, InvalidRequest when `new` fails
        the policy or is one of the last four."""
        async with self.uow.reading() as repo:
            row = (await repo.conn.execute(select(_o).where(_o.c.id == operator_id))).first()
            if row is None:
                raise ResourceMissing(f"No such operator: '{operator_id}'", param="operator")
            earlier = await _earlier_hashes(repo.conn, operator_id, HISTORY - 1)
        operator = _operator(row)
        matches = await self.passwords.verify_async(row.password_hash, current)
        now = self.clock.now()
        if operator.locked_at(now):
            raise AuthenticationError(WRONG_CURRENT)
        if not matches:
            # A wrong guess here counts towards the lock as at sign-in.
            await self._count_failure(
                operator, now, origin, tag=AuditTag.OPERATOR_PASSWORD_CHANGE, message=WRONG_CURRENT
            )
        self.passwords.check(new, email=operator.email)
        await asyncio.to_thread(self.passwords.check_history, new, [row.password_hash, *earlier])
        hashed = await self.passwords.hash_async(new)
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            changed = await conn.execute(
                update(_o)
                .where(_o.c.id == operator.id, _o.c.password_hash == row.password_hash)
                .values(password_hash=hashed, password_changed_at=now, updated_at=now)
            )
            if changed.rowcount != 1:  # changed meanwhile by another request
                raise InvalidRequest("The password was just changed; try again.", param="password")
            await conn.execute(
                _h.insert().values(
                    operator_id=operator.id, password_hash=row.password_hash, replaced_at=now
                )
            )
            await _prune_history(conn, operator.id, HISTORY - 1)
            await end_access(conn, operator.id, now)  # every session and app token
            await tx.repo.add_audit_event(
                self._event(operator, AuditTag.OPERATOR_PASSWORD_CHANGE, origin)
            )
            await tx.commit()

    # --- audit ------------------------------------------------------------------------------------
    def _event(
        self,
        operator: Operator,
        tag: AuditTag,
        origin: Origin,
        outcome: Outcome = Outcome.SUCCESS,
        details: dict[str, Any] | None = None,
        *,
        actor: Actor | None = None,
    ) -> AuditEvent:
        return operator_event(self.audit, operator, tag, origin, outcome, details, actor=actor)


def operator_event(
    audit: AuditLog,
    operator: Operator,
    tag: AuditTag,
    origin: Origin,
    outcome: Outcome = Outcome.SUCCESS,
    details: Mapping[str, Any] | None = None,
    *,
    actor: Actor | None = None,
) -> AuditEvent:
    """An audit event about an operator, by that operator unless `actor` says otherwise."""
    return audit.event(
        tag,
        actor=actor or Actor(ActorType.USER, operator.id),
        outcome=outcome,
        merchant_id=operator.merchant_id,
        origin=origin,
        resource=("operator", operator.id),
        details=details,
    )


async def _earlier_hashes(conn: AsyncConnection, operator_id: str, keep: int) -> list[str]:
    rows = await conn.execute(
        select(_h.c.password_hash)
        .where(_h.c.operator_id == operator_id)
        .order_by(_h.c.id.desc())
        .limit(keep)
    )
    return [r.password_hash for r in rows]


async def _prune_history(conn: AsyncConnection, operator_id: str, keep: int) -> None:
    """Only the `keep` newest earlier hashes are ever compared; older ones are deleted."""
    newest = (
        select(_h.c.id)
        .where(_h.c.operator_id == operator_id)
        .order_by(_h.c.id.desc())
        .limit(keep)
        .scalar_subquery()
    )
    await conn.execute(delete(_h).where(_h.c.operator_id == operator_id, _h.c.id.not_in(newest)))


async def end_access(conn: AsyncConnection, operator_id: str, now: datetime) -> None:
    """End every console session and every app token family of an operator (a password or
    role change, or a locked account): the next request with any of them is refused."""
    sessions, tokens = t.operator_sessions, t.operator_tokens
    await conn.execute(
        update(sessions)
        .where(sessions.c.operator_id == operator_id, sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await conn.execute(
        update(tokens)
        .where(tokens.c.operator_id == operator_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
