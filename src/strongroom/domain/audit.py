"""Audit events: what the tamper-evident log records, and the exact bytes that get hashed.

An event carries the PCI DSS 10.2.2 fields (who, what, when, outcome, origin, affected
resource) and nothing personal: a person appears only as an HMAC pseudonym, so erasing their
data elsewhere never breaks the log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class AuditTag(StrEnum):
    """Every event type, shaped `source:subject:action` (source: where the action came from)."""

    PAYMENT_INTENT_CREATE = "api:payment_intent:create"
    PAYMENT_INTENT_CONFIRM = "api:payment_intent:confirm"
    PAYMENT_INTENT_CAPTURE = "api:payment_intent:capture"
    PAYMENT_INTENT_CANCEL = "api:payment_intent:cancel"
    REFUND_CREATE = "api:refund:create"
    API_KEY_AUTHENTICATE = "api:api_key:authenticate"
    AUTHORIZATION_DENY = "api:authorization:deny"
    AUDIT_LOG_READ = "api:audit_log:read"
    API_KEY_CREATE = "cli:api_key:create"
    API_KEY_REVOKE = "cli:api_key:revoke"
    KEYRING_ROTATE = "cli:keyring:rotate"
    KEYRING_RETIRE = "cli:keyring:retire"
    WEBHOOK_VERIFY = "webhook:signature:verify"
    WEBHOOK_ENDPOINT_CREATE = "api:webhook_endpoint:create"
    WEBHOOK_ENDPOINT_UPDATE = "api:webhook_endpoint:update"
    WEBHOOK_ENDPOINT_DELETE = "api:webhook_endpoint:delete"
    WEBHOOK_SECRET_ROTATE = "api:webhook_endpoint:rotate_secret"  # noqa: S105 - a tag
    GATEWAY_ACCOUNT_CREATE = "api:gateway_account:create"
    GATEWAY_ACCOUNT_DELETE = "api:gateway_account:delete"
    GATEWAY_ROUTING_UPDATE = "api:gateway_routing:update"
    OPERATOR_CREATE = "cli:operator:create"
    OPERATOR_SIGN_IN = "console:operator:sign_in"
    OPERATOR_LOCK = "console:operator:lock"
    OPERATOR_UNLOCK = "console:operator:unlock"
    OPERATOR_PASSWORD_CHANGE = "console:operator:password_change"  # noqa: S105 - a tag
    OPERATOR_TOTP_ENROL = "console:operator:totp_enrol"
    OPERATOR_WEBAUTHN_REGISTER = "console:operator:webauthn_register"
    OPERATOR_SECOND_FACTOR = "console:operator:second_factor"
    OPERATOR_SESSION_REVOKE = "console:session:revoke"
    OPERATOR_SIGN_OUT = "console:session:sign_out"
    MERCHANT_REFUND_STEP_UP_UPDATE = "console:merchant:refund_step_up"
    MERCHANT_RATE_LIMITS_UPDATE = "cli:merchant:rate_limits"
    REPORT_EXPORT = "console:report:export"
    OPERATOR_INVITE = "console:operator:invite"
    OPERATOR_INVITATION_ACCEPT = "console:operator:accept_invitation"
    OPERATOR_ROLE_CHANGE = "console:operator:role_change"
    OPERATOR_TOKEN_GRANT = "console:operator_token:grant"  # noqa: S105 - a tag
    OPERATOR_TOKEN_REUSE = "api:operator_token:reuse"  # noqa: S105 - a tag
    BANK_ACCOUNT_LINK = "api:bank_account:link"
    BANK_ACCOUNT_VERIFY = "api:bank_account:verify"
    # The system's: a verification expired, or the bank provider's webhook moved it.
    BANK_ACCOUNT_VERIFICATION_UPDATE = "system:bank_account:verification"
    BANK_TOKEN_ROTATE = "cli:bank_item:rotate_token"  # noqa: S105 - a tag
    BANK_DEBIT_SETTLE = "system:bank_debit:settle"  # settled, or returned (outcome failure)


class ActorType(StrEnum):
    API_KEY = "api_key"
    USER = "user"
    SYSTEM = "system"  # the CLI run by an operator on the host, or a worker loop
    ANONYMOUS = "anonymous"  # e.g. a request whose credentials were refused


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True)
class Actor:
    type: ActorType
    id: str | None = None


SYSTEM = Actor(ActorType.SYSTEM, "cli")


@dataclass(frozen=True)
class Origin:
    """Where a request came from."""

    ip: str | None = None
    request_id: str | None = None


NO_ORIGIN = Origin()  # the CLI and worker loops: no request behind the action


@dataclass(frozen=True)
class AuditEvent:
    id: str
    occurred_at: datetime
    event_type: AuditTag
    outcome: Outcome
    actor: Actor
    merchant_id: str | None = None
    livemode: bool | None = None  # the mode of the key acting; None for installation-wide events
    origin: Origin = NO_ORIGIN
    resource_type: str | None = None
    resource_id: str | None = None
    subject: str | None = None  # an HMAC pseudonym (see pseudonym())
    details: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> bytes:
        """The log entry: canonical JSON of every field, so the leaf hash covers all of them
        and the same event always hashes the same on SQLite and PostgreSQL. `livemode` was
        added after the first entries were written, so it appears only when set: older
        entries keep hashing as they did."""
        mode = {} if self.livemode is None else {"livemode": self.livemode}
        return canonical_entry(
            {
                **mode,
                "id": self.id,
                "merchant_id": self.merchant_id,
                "occurred_at": iso_utc(self.occurred_at),
                "event_type": str(self.event_type),
                "outcome": str(self.outcome),
                "actor_type": str(self.actor.type),
                "actor_id": self.actor.id,
                "ip": self.origin.ip,
                "request_id": self.origin.request_id,
                "resource_type": self.resource_type,
                "resource_id": self.resource_id,
                "subject": self.subject,
                "details": self.details,
            }
        )


def canonical_entry(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pseudonym(key: bytes, value: str) -> str:
    """A stable stand-in for a person or a presented credential: equal inputs give equal
    pseudonyms (so repeated failures correlate) but the value cannot be read back."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def tree_head_message(tree_size: int, timestamp_ms: int, root_hash: bytes) -> bytes:
    """The bytes a tree head's Ed25519 signature covers: a version byte, then tree size and
    timestamp as unsigned 64-bit big-endian integers, then the 32-byte root hash."""
    return b"\x01" + struct.pack(">QQ", tree_size, timestamp_ms) + root_hash
