"""What an authorization decision is about and what it says (the policy itself is Rego, in
strongroom/policies; the service layer's Authorizer asks it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    """The object an action is on. `merchant_id` is whose it is: the policy refuses an object
    of another merchant even if a repository ever failed to filter it out."""

    type: str
    id: str | None = None
    merchant_id: str | None = None
    amount: int | None = None
    currency: str | None = None

    def as_input(self) -> dict[str, Any]:
        fields = {
            "type": self.type,
            "id": self.id,
            "merchant": self.merchant_id,
            "amount": self.amount,
            "currency": self.currency,
        }
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class PolicyAnswer:
    """What the policy itself answers (see strongroom/policies/authz.rego)."""

    allow: bool
    reason: str
    denials: tuple[str, ...]  # codes: tenant, scope, role, step_up, …
    mask: bool


@dataclass(frozen=True)
class Decision:
    action: str
    allow: bool
    reason: str
    denials: tuple[str, ...]
    mask: bool  # the caller sees personal data masked
    policy: str  # the bundle's hash: which version of the policy decided

    def audit_details(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "decision": "allow" if self.allow else "deny",
            "reason": self.reason,
            "policy": self.policy,
        }


MASK = "•••"


def mask_email(email: str | None) -> str | None:
    """What a role that sees personal data masked is shown of an address: its first letter
    and its domain (enough to tell two customers apart on a call, not to write to them)."""
    if not email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}{MASK}@{domain}" if domain else f"{local[:1]}{MASK}"
