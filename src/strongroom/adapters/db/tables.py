"""The schema, as SQLAlchemy Core tables. Alembic migrations are written against this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from strongroom.adapters.db.types import Json, UTCDateTime

# A naming convention keeps constraint names identical on both databases, so migrations that
# alter them stay stable.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = String(40)
AutoId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

merchants = Table(
    "merchants",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

legal_entities = Table(
    "legal_entities",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False, unique=True),
    Column("legal_name", String(200), nullable=False),
    Column("country", String(2), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # secret | publishable
    Column("livemode", Boolean, nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display", String(40), nullable=False),  # prefix and last four, never the secret
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

customers = Table(
    "customers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("email", String(512), nullable=True),
    Column("name", String(256), nullable=True),
    Column("description", String(1000), nullable=True),
    Column("metadata", Json, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "merchant_id", "created_at"),
)

payment_intents = Table(
    "payment_intents",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(32), nullable=False),
    Column("capture_method", String(16), nullable=False),
    Column("payment_method", String(255), nullable=True),
    Column("amount_capturable", BigInteger, nullable=False),
    Column("amount_received", BigInteger, nullable=False),
    Column("amount_refunded", BigInteger, nullable=False),
    Column("gateway", String(32), nullable=False),
    Column("gateway_reference", String(255), nullable=True),
    Column("pending_operation_id", Id, nullable=True),
    Column("next_action", Json, nullable=True),
    Column("last_payment_error", Json, nullable=True),
    Column("cancellation_reason", String(32), nullable=True),
    Column("canceled_at", UTCDateTime(), nullable=True),
    Column("metadata", Json, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "merchant_id", "created_at", "id"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False, index=True),
    Column("payment_intent_id", Id, ForeignKey("payment_intents.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("failure_reason", String(64), nullable=True),
    Column("gateway_reference", String(255), nullable=True),
    Column("metadata", Json, nullable=False),
    Column("livemode", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

gateway_operations = Table(
    "gateway_operations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("payment_intent_id", Id, ForeignKey("payment_intents.id"), nullable=False, index=True),
    Column("refund_id", Id, ForeignKey("refunds.id"), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("request", Json, nullable=False),
    Column("locked_until", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "status", "updated_at"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("movement", String(32), nullable=False),
    Column("payment_intent_id", Id, ForeignKey("payment_intents.id"), nullable=False, index=True),
    Column("refund_id", Id, ForeignKey("refunds.id"), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("transaction_id", Id, ForeignKey("ledger_transactions.id"), nullable=False, index=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("account", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index(None, "merchant_id", "account", "currency"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    # Test and live mode are separate worlds, as at Stripe: a key used in one is free in the other.
    Column("livemode", Boolean, nullable=False, server_default=false()),
    Column("key", String(255), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("resource_id", Id, nullable=True),  # set with the first write, so a resume finds it
    Column("locked_until", UTCDateTime(), nullable=True),
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False, index=True),
    UniqueConstraint("merchant_id", "livemode", "key"),
)

# The sandbox gateway's own record, as a processor would keep it on its side. It is written in
# the sandbox's own transactions, never ours, so our rollback cannot erase a charge it made.
sandbox_charges = Table(
    "sandbox_charges",
    metadata,
    Column("id", Id, primary_key=True),
    Column("payment_method", String(255), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(24), nullable=False),
    Column("amount_captured", BigInteger, nullable=False),
    Column("amount_refunded", BigInteger, nullable=False),
    Column("capture", Boolean, nullable=False),
    Column("challenge", String(16), nullable=True),  # 3-D Secure: pending | succeeded | failed
    Column("created_at", UTCDateTime(), nullable=False),
    # The key the charge was made with, so an authorization is one INSERT … ON CONFLICT.
    Column("idempotency_key", String(255), nullable=True, unique=True),
)

sandbox_requests = Table(
    "sandbox_requests",
    metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("operation", String(16), nullable=False),
    Column("response", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
