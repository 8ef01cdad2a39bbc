"""WebAuthn (security keys, platform authenticators) as an operator's second factor, an
alternative to TOTP, with the `webauthn` library doing every check of the ceremonies.

Each ceremony's challenge is made here, kept on the operator's session row and taken by the
response that answers it (a conditional UPDATE), so a challenge is answered once and only in
the session that asked; it is good for 5 minutes. The relying party is the console's own host
(public_url) and the only origin accepted is its origin. After an authentication, the stored
signature counter moves to the authenticator's; the library refuses a counter that did not
grow (a cloned key), except for authenticators that keep none (always 0).
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select, update
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from strongroom.adapters.db import tables as t
from strongroom.domain.audit import (
    NO_ORIGIN,
    Actor,
    ActorType,
    AuditEvent,
    AuditTag,
    Origin,
    Outcome,
)
from strongroom.domain.clock import Clock
from strongroom.domain.errors import AuthenticationError
from strongroom.domain.ids import new_id
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.operators import Operator, operator_event
from strongroom.service_layer.unit_of_work import UnitOfWork

_s = t.operator_sessions
_w = t.operator_webauthn_credentials
CHALLENGE_LIFETIME = timedelta(minutes=5)
RP_NAME = "Strongroom"
REFUSED = "The security key's answer was not accepted."


class WebAuthnFactor:
    def __init__(self, uow: UnitOfWork, clock: Clock, audit: AuditLog, *, public_url: str) -> None:
        self.uow = uow
        self.clock = clock
        self.audit = audit
        parts = urlsplit(public_url)
        self.rp_id = parts.hostname or "localhost"
        # The origin a browser names in clientDataJSON: the default port left out.
        default = {"http": 80, "https": 443}.get(parts.scheme)
        port = "" if parts.port in (None, default) else f":{parts.port}"
        self.origin = f"{parts.scheme}://{self.rp_id}{port}"

    async def credential_count(self, operator_id: str) -> int:
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(select(_w.c.id).where(_w.c.operator_id == operator_id))
            return len(rows.all())

    # --- registration -----------------------------------------------------------------------------
    async def registration_options(self, session_id: str, operator: Operator) -> str:
        """PublicKeyCredentialCreationOptions as JSON, for navigator.credentials.create."""
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=RP_NAME,
            user_id=operator.id.encode(),
            user_name=operator.email,
            exclude_credentials=await self._descriptors(operator.id),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
        )
        await self._keep_challenge(session_id, options.challenge)
        return options_to_json(options)

    async def register(
        self, session_id: str, operator: Operator, credential: str, *, origin: Origin = NO_ORIGIN
    ) -> None:
        """Store the new credential once the library has verified the response."""
        challenge = await self._take_challenge(session_id)
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError):
            raise AuthenticationError(REFUSED) from None
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            await tx.repo.conn.execute(
                _w.insert().values(
                    id=new_id("wac"),
                    operator_id=operator.id,
                    credential_id=bytes_to_base64url(verified.credential_id),
                    public_key=bytes_to_base64url(verified.credential_public_key),
                    sign_count=verified.sign_count,
                    created_at=now,
                    last_used_at=None,
                )
            )
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.OPERATOR_WEBAUTHN_REGISTER,
                    actor=Actor(ActorType.USER, operator.id),
                    merchant_id=operator.merchant_id,
                    origin=origin,
                    resource=("operator", operator.id),
                )
            )
            await tx.commit()

    # --- authentication ---------------------------------------------------------------------------
    async def authentication_options(self, session_id: str, operator: Operator) -> str:
        options = generate_authentication_options(
            rp_id=self.rp_id,
            allow_credentials=await self._descriptors(operator.id),
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        await self._keep_challenge(session_id, options.challenge)
        return options_to_json(options)

    async def authenticate(
        self, session_id: str, operator: Operator, credential: str, *, origin: Origin = NO_ORIGIN
    ) -> None:
        """Returns once one of the operator's credentials has signed this session's challenge;
        AuthenticationError otherwise (audited)."""
        challenge = await self._take_challenge(session_id)
        async with self.uow.reading() as repo:
            stored = {
                row.credential_id: row
                for row in await repo.conn.execute(
                    select(_w).where(_w.c.operator_id == operator.id)
                )
            }
        try:
            raw_id = _raw_id(credential)
            row = stored[raw_id]
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=base64url_to_bytes(row.public_key),
                credential_current_sign_count=row.sign_count,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError):
            await self.audit.record_alone(self._event(operator, origin, Outcome.FAILURE))
            raise AuthenticationError(REFUSED) from None
        async with self.uow.transaction() as tx:
            # Conditional on the counter checked: of two racing answers (a cloned key), one.
            moved = await tx.repo.conn.execute(
                update(_w)
                .where(_w.c.id == row.id, _w.c.sign_count == row.sign_count)
                .values(sign_count=verified.new_sign_count, last_used_at=self.clock.now())
            )
            if moved.rowcount == 1:
                await tx.repo.add_audit_event(self._event(operator, origin, Outcome.SUCCESS))
                await tx.repo.conn.execute(
                    update(t.operators)
                    .where(t.operators.c.id == operator.id)
                    .values(second_factor_failures=0)
                )
                await tx.commit()
        if moved.rowcount != 1:
            raise AuthenticationError(REFUSED)

    # --- helpers ----------------------------------------------------------------------------------
    async def _descriptors(self, operator_id: str) -> list[PublicKeyCredentialDescriptor]:
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(_w.c.credential_id).where(_w.c.operator_id == operator_id)
            )
            return [
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(r.credential_id)) for r in rows
            ]

    async def _keep_challenge(self, session_id: str, challenge: bytes) -> None:
        async with self.uow.transaction() as tx:
            await tx.repo.conn.execute(
                update(_s)
                .where(_s.c.id == session_id)
                .values(
                    webauthn_challenge=bytes_to_base64url(challenge),
                    webauthn_challenge_at=self.clock.now(),
                )
            )
            await tx.commit()

    async def _take_challenge(self, session_id: str) -> bytes:
        """The session's pending challenge, cleared as it is read; AuthenticationError if
        there is none or it is older than 5 minutes."""
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            challenge = (
                await conn.execute(
                    select(_s.c.webauthn_challenge).where(
                        _s.c.id == session_id,
                        _s.c.webauthn_challenge_at > self.clock.now() - CHALLENGE_LIFETIME,
                    )
                )
            ).scalar_one_or_none()
            taken = await conn.execute(
                update(_s)
                .where(_s.c.id == session_id, _s.c.webauthn_challenge == challenge)
                .values(webauthn_challenge=None, webauthn_challenge_at=None)
            )
            await tx.commit()
        if challenge is None or taken.rowcount != 1:
            raise AuthenticationError(REFUSED)
        return base64url_to_bytes(challenge)

    def _event(self, operator: Operator, origin: Origin, outcome: Outcome) -> AuditEvent:
        tag, details = AuditTag.OPERATOR_SECOND_FACTOR, {"factor": "webauthn"}
        return operator_event(self.audit, operator, tag, origin, outcome, details)


def _raw_id(credential: str) -> str:
    parsed = json.loads(credential)
    raw = parsed["rawId"] if isinstance(parsed, dict) else None
    if not isinstance(raw, str):
        raise ValueError("no rawId")
    return bytes_to_base64url(base64url_to_bytes(raw))  # normalised
