"""Request bodies and response objects of /v1, in Stripe's shapes. Unknown fields are refused,
so a typo never silently does something else."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from strongroom.domain.model import CancellationReason, CaptureMethod, RefundReason

# PostgreSQL text cannot hold U+0000, so every string is refused with it at the edge, on every
# database alike; the pattern also tells OpenAPI clients (and fuzzers) it is not allowed.
NO_NUL = r"^[^\x00]*$"
ObjectId = Annotated[str, Field(min_length=1, max_length=40, pattern=NO_NUL)]
PathId = Annotated[str, Path(max_length=40, pattern=NO_NUL)]
Token = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=NO_NUL,
        description="A gateway's card token, or a verified bank account (ba_…) to debit.",
    ),
]
Metadata = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=40, pattern=NO_NUL)],
        Annotated[str, Field(max_length=500, pattern=NO_NUL)],
    ],
    Field(max_length=50, description="Up to 50 keys of ≤40 characters, values ≤500 characters."),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerCreate(Body):
    email: Annotated[str, Field(max_length=512, pattern=NO_NUL)] | None = None
    name: Annotated[str, Field(max_length=256, pattern=NO_NUL)] | None = None
    description: Annotated[str, Field(max_length=1000, pattern=NO_NUL)] | None = None
    metadata: Metadata = Field(default_factory=dict)


class PaymentIntentCreate(Body):
    amount: StrictInt = Field(description="Minor units of `currency`, e.g. 1099 for $10.99.")
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217, e.g. usd.")]
    customer: ObjectId | None = None
    payment_method: Token | None = None
    capture_method: CaptureMethod = CaptureMethod.AUTOMATIC
    confirm: StrictBool = False
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class PaymentIntentConfirm(Body):
    payment_method: Token | None = None


class PaymentIntentCapture(Body):
    amount_to_capture: StrictInt | None = None


class PaymentIntentCancel(Body):
    cancellation_reason: CancellationReason | None = None


class RefundCreate(Body):
    payment_intent: ObjectId
    amount: StrictInt | None = None
    reason: RefundReason | None = None
    metadata: Metadata = Field(default_factory=dict)


# --- responses ------------------------------------------------------------------------------------


class CustomerOut(BaseModel):
    id: str
    object: Literal["customer"] = "customer"
    email: str | None
    name: str | None
    description: str | None
    metadata: dict[str, str]
    livemode: bool
    created: int


class BankAccountOut(BaseModel):
    id: str
    object: Literal["bank_account"] = "bank_account"
    status: Literal["pending", "verified", "failed", "expired"]
    verification_status: str = Field(
        description="The finer state: pending_automatic_verification, "
        "pending_manual_verification (micro-deposits sent), automatically_verified, "
        "manually_verified, verification_failed or verification_expired."
    )
    verification_attempts_remaining: int
    verify_by: int = Field(description="When a pending verification expires (Unix time).")
    customer: str | None
    institution: str | None
    account_type: str
    last4: str = Field(description="The only digits of the account ever shown.")
    livemode: bool
    created: int


class PaymentIntentOut(BaseModel):
    id: str
    object: Literal["payment_intent"] = "payment_intent"
    amount: int
    amount_capturable: int
    amount_received: int
    currency: str
    status: str
    capture_method: CaptureMethod
    customer: str | None
    payment_method: str | None
    latest_charge: str | None
    gateway: str  # which gateway took the payment (sandbox, stripe, braintree)
    next_action: dict[str, Any] | None
    last_payment_error: dict[str, Any] | None
    cancellation_reason: str | None
    canceled_at: int | None
    metadata: dict[str, str]
    livemode: bool
    created: int


class PaymentIntentList(BaseModel):
    object: Literal["list"] = "list"
    url: str
    has_more: bool
    data: list[PaymentIntentOut]


class RefundOut(BaseModel):
    id: str
    object: Literal["refund"] = "refund"
    amount: int
    currency: str
    payment_intent: str
    status: str
    reason: str | None
    failure_reason: str | None
    metadata: dict[str, str]
    created: int


class AuditEventOut(BaseModel):
    id: str
    object: Literal["audit_event"] = "audit_event"
    type: str = Field(description="`source:subject:action`, e.g. `api:refund:create`.")
    outcome: str = Field(description="`success` or `failure`.")
    occurred_at: str = Field(description="UTC, ISO 8601 with microseconds.")
    actor: dict[str, str | None] = Field(description="`type` (api_key, user, system) and `id`.")
    origin: dict[str, str | None] = Field(description="`ip` and `request_id`.")
    resource: dict[str, str | None] | None
    subject: str | None = Field(description="HMAC pseudonym of the person concerned, if any.")
    details: dict[str, Any]
    livemode: bool | None
    entry: str = Field(
        description="The exact bytes the tree commits to (canonical JSON of every field): "
        "check leaf_hash = SHA-256(0x00 || entry) yourself."
    )
    leaf_index: int | None = Field(description="Position in the Merkle tree; null until sequenced.")
    leaf_hash: str | None = Field(description="SHA-256(0x00 || entry), lowercase hex.")


class AuditEventList(BaseModel):
    object: Literal["list"] = "list"
    url: str
    has_more: bool
    data: list[AuditEventOut]


class TreeHeadOut(BaseModel):
    object: Literal["tree_head"] = "tree_head"
    tree_size: int
    root_hash: str
    timestamp: int = Field(description="Milliseconds since the Unix epoch.")
    key_id: str
    public_key: str = Field(description="The Ed25519 public key that signed this head, hex.")
    signature: str = Field(
        description="Ed25519 over 0x01 || tree_size (u64 BE) || timestamp (u64 BE) || root_hash."
    )


class InclusionProofOut(BaseModel):
    object: Literal["inclusion_proof"] = "inclusion_proof"
    leaf_index: int
    tree_size: int
    inclusion_path: list[str]


class ConsistencyProofOut(BaseModel):
    object: Literal["consistency_proof"] = "consistency_proof"
    first: int
    second: int
    consistency_path: list[str]


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    param: str | None = None
    request_id: str
    decline_code: str | None = None
    payment_intent: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
