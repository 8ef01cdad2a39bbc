"""Operators' second factor: TOTP (RFC 6238, with pyotp) and single-use recovery codes.

begin_totp    a new seed, sealed with the keyring and bound to the operator's row, and the
              otpauth:// URI an authenticator app reads (from a QR code); not in force yet.
confirm_totp  the first right code puts the seed in force and returns ten recovery codes,
              shown once and stored only as keyed hashes.
verify        a TOTP code (the current 30 s step or one either side, for clock drift) or an
              unused recovery code. Each TOTP step is accepted once: the newest accepted step
              is kept and nothing at or before it passes again. A wrong answer is audited and
              emitted as `operator.second_factor_failed`, since whoever gave it had the
              password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
from sqlalchemy import select, update

from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Binding, Envelope
from strongroom.adapters.kms.sealed import SealedValue
from strongroom.domain.audit import (
    NO_ORIGIN,
    AuditEvent,
    AuditTag,
    Origin,
    Outcome,
)
from strongroom.domain.clock import Clock
from strongroom.domain.errors import AuthenticationError, IllegalTransition
from strongroom.domain.events import EventType
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.operators import Operator, Operators, end_access, operator_event
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

_o = t.operators
_r = t.operator_recovery_codes
ISSUER = "Strongroom"
STEP_SECONDS = 30
DRIFT_STEPS = 1
RECOVERY_CODES = 10
MAX_FAILURES = 5  # wrong second factors in a row before the account locks
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
SECOND_FACTOR_REFUSED = "The code is not correct."


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str  # base32, for typing in by hand
    uri: str  # otpauth://totp/…, for a QR code


@dataclass(frozen=True)
class _TotpState:
    sealed: SealedValue | None  # as stored: what a conditional update compares
    seed: str | None
    confirmed: bool
    last_step: int | None


def _binding(operator: Operator) -> Binding:
    return Binding.for_row(_o, "totp_seed", operator.id, operator.merchant_id)


def _step(moment: datetime) -> int:
    return int(moment.timestamp()) // STEP_SECONDS


class SecondFactors:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        envelope: Envelope,
        operators: Operators,
        audit: AuditLog,
        *,
        code_key: bytes,
    ) -> None:
        self.uow = uow
        self.clock = clock
        self.envelope = envelope
        self.operators = operators
        self.audit = audit
        self._code_key = code_key  # keys the recovery codes' hashes

    # --- enrolment --------------------------------------------------------------------------------
    async def begin_totp(self, operator_id: str) -> TotpEnrolment:
        """A fresh seed, pending until confirmed; replaces a pending one. Refused once TOTP is
        in force (a reset is an owner's act, not a second enrolment)."""
        operator = await self.operators.get(operator_id)
        secret = pyotp.random_base32(length=32)  # 160 bits, RFC 4226's recommendation
        sealed = await self.envelope.seal(secret.encode(), _binding(operator))
        async with self.uow.transaction() as tx:
            changed = await tx.repo.conn.execute(
                update(_o)
                .where(_o.c.id == operator.id, _o.c.totp_confirmed_at.is_(None))
                .values(totp_seed=sealed, totp_last_step=None, updated_at=self.clock.now())
            )
            if changed.rowcount != 1:
                raise IllegalTransition("TOTP is already set up for this operator.", status="on")
            await tx.commit()
        uri = pyotp.TOTP(secret).provisioning_uri(name=operator.email, issuer_name=ISSUER)
        return TotpEnrolment(secret, uri)

    async def confirm_totp(
        self, operator_id: str, code: str, *, origin: Origin = NO_ORIGIN
    ) -> list[str]:
        """Put the pending seed in force with a right code; returns the recovery codes."""
        operator = await self.operators.get(operator_id)
        state = await self._totp_state(operator)
        seed, confirmed, last_step = state.seed, state.confirmed, state.last_step
        if seed is None or confirmed:
            raise IllegalTransition("There is no TOTP enrolment waiting.", status="none")
        step = self._matching_step(seed, code, last_step)
        if step is None:
            raise AuthenticationError(SECOND_FACTOR_REFUSED)
        codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            # Conditional on the seed whose code was checked, still pending: a seed replaced
            # meanwhile (another tab) or a racing confirmation changes nothing.
            confirmed_now = await conn.execute(
                update(_o)
                .where(
                    _o.c.id == operator.id,
                    _o.c.totp_confirmed_at.is_(None),
                    _o.c.totp_seed == state.sealed,
                )
                .values(totp_confirmed_at=now, totp_last_step=step, updated_at=now)
            )
            if confirmed_now.rowcount != 1:
                raise IllegalTransition("There is no TOTP enrolment waiting.", status="none")
            await conn.execute(_r.delete().where(_r.c.operator_id == operator.id))
            await conn.execute(
                _r.insert(),
                [
                    {"operator_id": operator.id, "code_hash": self._hash(c), "created_at": now}
                    for c in codes
                ],
            )
            await tx.repo.add_audit_event(
                self._event(operator, AuditTag.OPERATOR_TOTP_ENROL, origin)
            )
            await tx.commit()
        return codes

    # --- the second step of signing in ------------------------------------------------------------
    async def verify(self, operator_id: str, code: str, *, origin: Origin = NO_ORIGIN) -> None:
        """Returns when `code` is a TOTP code not used before or an unused recovery code;
        otherwise audits, emits the event and raises AuthenticationError. The fifth wrong
        answer in a row locks the account (as ten wrong passwords do) and ends every session
        and app token of the operator, so codes cannot be guessed at leisure."""
        operator = await self.operators.get(operator_id)
        state = await self._totp_state(operator)
        seed, confirmed, last_step = state.seed, state.confirmed, state.last_step
        typed = code.strip().replace(" ", "").replace("-", "").lower()
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            step = self._matching_step(seed, typed, last_step) if confirmed and seed else None
            used = 0
            if step is not None:
                # Conditional on the step read: of two racing uses of one code, one wins.
                used = (
                    await conn.execute(
                        update(_o)
                        .where(
                            _o.c.id == operator.id,
                            (_o.c.totp_last_step.is_(None)) | (_o.c.totp_last_step < step),
                        )
                        .values(totp_last_step=step, updated_at=now)
                    )
                ).rowcount
            elif typed:
                used = (
                    await conn.execute(
                        update(_r)
                        .where(
                            _r.c.operator_id == operator.id,
                            _r.c.code_hash == self._hash(typed),
                            _r.c.used_at.is_(None),
                        )
                        .values(used_at=now)
                    )
                ).rowcount
            kind = "totp" if step is not None else "recovery_code"
            if used == 1:
                details = {"factor": kind}
                await conn.execute(
                    update(_o).where(_o.c.id == operator.id).values(second_factor_failures=0)
                )
                await tx.repo.add_audit_event(
                    self._event(operator, AuditTag.OPERATOR_SECOND_FACTOR, origin, details=details)
                )
                await tx.commit()
                return
            await self._count_failure(tx, operator, now, origin)
            tx.emit(
                EventType.OPERATOR_SECOND_FACTOR_FAILED,
                merchant_id=operator.merchant_id,
                livemode=True,  # a security alert: to the merchant's live endpoints
                aggregate=("operator", operator.id),
                data={
                    "id": operator.id,
                    "object": "operator",
                    "email": operator.email,
                    "ip": origin.ip,
                },
            )
            await tx.commit()
        raise AuthenticationError(SECOND_FACTOR_REFUSED)

    async def enrolled(self, operator_id: str) -> bool:
        """Whether the operator's TOTP is in force."""
        async with self.uow.reading() as repo:
            confirmed = await repo.conn.execute(
                select(_o.c.totp_confirmed_at).where(_o.c.id == operator_id)
            )
            return confirmed.scalar_one_or_none() is not None

    async def _count_failure(
        self, tx: Transaction, operator: Operator, now: datetime, origin: Origin
    ) -> None:
        conn = tx.repo.conn
        failures = (
            await conn.execute(
                update(_o)
                .where(_o.c.id == operator.id)
                .values(second_factor_failures=_o.c.second_factor_failures + 1)
                .returning(_o.c.second_factor_failures)
            )
        ).scalar_one()
        details = {"failures": str(failures)}
        await tx.repo.add_audit_event(
            self._event(
                operator,
                AuditTag.OPERATOR_SECOND_FACTOR,
                origin,
                outcome=Outcome.FAILURE,
                details=details,
            )
        )
        if failures >= MAX_FAILURES:
            await conn.execute(
                update(_o)
                .where(_o.c.id == operator.id)
                .values(second_factor_failures=0, locked_until=now + self.operators.lockout)
            )
            await end_access(conn, operator.id, now)
            await tx.repo.add_audit_event(
                self._event(
                    operator, AuditTag.OPERATOR_LOCK, origin, details={"reason": "second_factor"}
                )
            )

    async def recovery_codes_left(self, operator_id: str) -> int:
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(_r.c.id).where(_r.c.operator_id == operator_id, _r.c.used_at.is_(None))
            )
            return len(rows.all())

    # --- helpers ----------------------------------------------------------------------------------

    async def _totp_state(self, operator: Operator) -> _TotpState:
        async with self.uow.reading() as repo:
            row = (
                await repo.conn.execute(
                    select(_o.c.totp_seed, _o.c.totp_confirmed_at, _o.c.totp_last_step).where(
                        _o.c.id == operator.id
                    )
                )
            ).one()
        if row.totp_seed is None:
            return _TotpState(None, None, False, None)
        seed = (await self.envelope.open(row.totp_seed, _binding(operator))).decode()
        confirmed = row.totp_confirmed_at is not None
        return _TotpState(row.totp_seed, seed, confirmed, row.totp_last_step)

    def _matching_step(self, seed: str, code: str, last_step: int | None) -> int | None:
        """The step whose code `code` is, within the drift window and after `last_step`."""
        if len(code) != 6 or not code.isdigit():
            return None
        totp = pyotp.TOTP(seed)
        now = _step(self.clock.now())
        for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
            if last_step is not None and step <= last_step:
                continue
            if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
                return step
        return None

    def _hash(self, code: str) -> str:
        normal = code.strip().replace(" ", "").replace("-", "").lower()
        return hmac.new(self._code_key, normal.encode(), hashlib.sha256).hexdigest()

    def _event(
        self,
        operator: Operator,
        tag: AuditTag,
        origin: Origin,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        details: dict[str, str] | None = None,
    ) -> AuditEvent:
        return operator_event(self.audit, operator, tag, origin, outcome, details)


def _recovery_code() -> str:
    """Ten characters in two groups (`abcde-fghjk`): about 49 bits, typed without ambiguity."""
    chars = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{chars[:5]}-{chars[5:]}"
