"""Asking the authorization policy: the principal, action, resource and context it reads, and
what a refusal means.

Every API route names its action (see entrypoints/api/deps.py) and is refused unless the policy
allows it; the service layer asks again about an object once it has loaded it, so the policy
sees the object's own merchant (tenant isolation twice: repositories filter by the caller's
merchant, and the policy refuses another merchant's object). A refusal is audited with the
decision; another merchant's object is answered as if it did not exist (404), anything else
with 403 and the policy's reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

from strongroom.domain.audit import AuditTag, Outcome
from strongroom.domain.authorization import Decision, PolicyAnswer, Resource
from strongroom.domain.clock import Clock
from strongroom.domain.errors import PermissionDenied, ResourceMissing, StrongroomError
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.commands import Caller


class Policy(Protocol):
    bundle_hash: str

    def decide(self, input_: Mapping[str, Any]) -> PolicyAnswer: ...


class Authorizer:
    def __init__(
        self, policy: Policy, clock: Clock, audit: AuditLog, *, enforced: bool = True
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.audit = audit
        self.enforced = enforced  # False only to benchmark the policy (never in production)

    def principal(self, caller: Caller) -> dict[str, Any]:
        """Only what the policy reads (a smaller input is a faster decision)."""
        if caller.operator_id is not None:
            operator: dict[str, Any] = {
                "type": "operator",
                "merchant": caller.merchant_id,
                "role": caller.role,
            }
            if caller.second_factor_at is not None:
                age = self.clock.now() - caller.second_factor_at
                operator["mfa_age_seconds"] = age.total_seconds()
            return operator
        key: dict[str, Any] = {
            "type": "publishable_key" if caller.publishable else "api_key",
            "merchant": caller.merchant_id,
        }
        if caller.scopes is not None:
            key["scopes"] = sorted(caller.scopes)
        return key

    def decide(
        self,
        caller: Caller,
        action: str,
        resource: Resource | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        if not self.enforced:
            return Decision(action, True, "Policy not enforced.", (), False, "none")
        input_: dict[str, Any] = {"principal": self.principal(caller), "action": action}
        if resource is not None:
            input_["resource"] = resource.as_input()
        if context:
            input_["context"] = dict(context)
        answer = self.policy.decide(input_)
        return Decision(
            action=action,
            allow=answer.allow,
            reason=answer.reason,
            denials=answer.denials,
            mask=answer.mask,
            policy=self.policy.bundle_hash,
        )

    def check(
        self,
        caller: Caller,
        action: str,
        resource: Resource | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Caller:
        """The caller, carrying the decision, if the policy allows; else `Refused`. No I/O, so
        it may run inside a transaction; `refusals()` around the transaction answers it."""
        decision = self.decide(caller, action, resource, context)
        if not decision.allow:
            raise Refused(caller, decision, resource)
        return replace(caller, decision=decision)

    async def require(
        self,
        caller: Caller,
        action: str,
        resource: Resource | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Caller:
        async with self.refusals():
            return self.check(caller, action, resource, context)

    @contextlib.asynccontextmanager
    async def refusals(self) -> AsyncIterator[None]:
        """Turns a `Refused` raised inside (after any transaction it left has rolled back) into
        an audited 403, or 404 for another merchant's object."""
        try:
            yield
        except Refused as refused:
            caller, decision, resource = refused.caller, refused.decision, refused.resource
            await self.audit.record_alone(
                self.audit.by_caller(
                    replace(caller, decision=decision),
                    AuditTag.AUTHORIZATION_DENY,
                    outcome=Outcome.FAILURE,
                    resource=(resource.type, resource.id)
                    if resource is not None and resource.id is not None
                    else None,
                )
            )
            raise refused.error() from None


class Refused(Exception):
    """The policy's refusal, before it is audited and answered (see Authorizer.refusals)."""

    def __init__(self, caller: Caller, decision: Decision, resource: Resource | None) -> None:
        super().__init__(decision.reason)
        self.caller, self.decision, self.resource = caller, decision, resource

    def error(self) -> StrongroomError:
        if "tenant" in self.decision.denials:
            kind = self.resource.type if self.resource is not None else "object"
            ident = self.resource.id if self.resource is not None else ""
            return ResourceMissing(f"No such {kind}: '{ident}'", param="id")
        first = self.decision.denials[0] if self.decision.denials else ""
        return PermissionDenied(self.decision.reason, code=_CODES.get(first))


# The error code a client sees for the first denial (others: permission_denied).
_CODES = {"step_up": "second_factor_required", "scope": "missing_scope"}
