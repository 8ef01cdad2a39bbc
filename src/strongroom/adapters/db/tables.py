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
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from strongroom.adapters.db.types import Json, Sealed, UTCDateTime

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
    # Operators' refunds above this (minor units, any currency) need a second factor within
    # the last 5 minutes.
    Column("refund_step_up_amount", BigInteger, nullable=False, server_default=text("10000")),
    # The merchant's own API rate limits by route class ({"reads": "50/second", …}); None or a
    # missing class: the installation's defaults.
    Column("rate_limits", Json, nullable=True),
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
    Column("kind", String(16), nullable=False),  # secret | restricted | publishable
    Column("livemode", Boolean, nullable=False),
    Column("scopes", Json, nullable=True),  # a restricted key's scopes; None for the others
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
    Column("gateway_account_id", Id, nullable=True),  # None: the built-in sandbox
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
    Index(None, "gateway_reference"),  # what a gateway webhook names
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

# --- audit log ------------------------------------------------------------------------------------
# Append-only: rows are inserted and never changed (on PostgreSQL a trigger refuses UPDATE and
# DELETE). Events are written in the transaction of the change they record; the sequencer later
# gives each one a leaf in the Merkle tree and signs tree heads. No personal data goes in a row:
# people are referred to by an HMAC pseudonym, so erasing them elsewhere never breaks the log.
Hash = String(64)  # SHA-256, lowercase hex

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", AutoId, primary_key=True, autoincrement=True),  # insertion order
    Column("id", Id, nullable=False, unique=True),
    Column("merchant_id", Id, nullable=True),  # None: installation-wide (e.g. key rotation)
    Column("livemode", Boolean, nullable=True),  # test or live, as the key acting; None: neither
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("actor_type", String(16), nullable=False),  # user | api_key | system | anonymous
    Column("actor_id", String(64), nullable=True),
    Column("event_type", String(64), nullable=False),  # source:subject:action
    Column("outcome", String(16), nullable=False),  # success | failure
    Column("ip", String(45), nullable=True),
    Column("request_id", String(40), nullable=True),
    Column("resource_type", String(32), nullable=True),
    Column("resource_id", String(64), nullable=True),
    Column("subject", Hash, nullable=True),  # HMAC pseudonym of a person, never the person
    Column("details", Json, nullable=False),
    Index(None, "merchant_id", "livemode", "seq"),
)

audit_leaves = Table(
    "audit_leaves",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("event_seq", AutoId, ForeignKey("audit_events.seq"), nullable=False, unique=True),
    Column("leaf_hash", Hash, nullable=False),
)

# Hashes of the tree's complete subtrees above the leaves (level 1 covers two leaves), so a
# proof needs O(log n) rows instead of every leaf.
audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", Hash, nullable=False),
    PrimaryKeyConstraint("level", "idx"),
)

audit_signing_keys = Table(
    "audit_signing_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("public_key", Hash, nullable=False),  # Ed25519, raw 32 bytes as hex
    Column("private_key", Sealed(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

audit_tree_heads = Table(
    "audit_tree_heads",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", Hash, nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("key_id", Id, ForeignKey("audit_signing_keys.id"), nullable=False),
    Column("signature", String(128), nullable=False),  # Ed25519, hex
)

AUDIT_TABLES = ("audit_events", "audit_leaves", "audit_nodes", "audit_tree_heads")

# --- events ---------------------------------------------------------------------------------------
# The transactional outbox: each domain event is inserted in the transaction of the change it
# describes, and the relay publishes unpublished rows in `seq` order. For any one aggregate,
# `seq` follows commit order, because every writer of an aggregate holds its row lock.
outbox = Table(
    "outbox",
    metadata,
    Column("seq", AutoId, primary_key=True, autoincrement=True),
    Column("id", Id, nullable=False, unique=True),  # evt_…
    Column("type", String(64), nullable=False),
    Column("merchant_id", Id, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("aggregate_type", String(32), nullable=False),
    Column("aggregate_id", Id, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("data", Json, nullable=False),  # the object as the API showed it at this commit
    Column("published_at", UTCDateTime(), nullable=True),
    # What the relay reads each pass: only the rows still to publish, in order.
    Index(
        "ix_outbox_unpublished",
        "seq",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
    Index(None, "published_at"),  # pruning
    # Never reuse a seq after pruning the newest rows: consumers compare seqs to keep the newest.
    sqlite_autoincrement=True,
)

# Leases for jobs that one process at a time should run (the relay: two relays would publish
# the same rows twice, and could interleave one aggregate's events). A holder that dies loses
# its lease when it expires.
worker_leases = Table(
    "worker_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# --- merchant webhooks ----------------------------------------------------------------------------
# Endpoints a merchant registered, per mode; their signing secrets (sealed: more than one is
# active while a rotation's grace period runs); one delivery per (endpoint, event), carrying the
# body frozen when the event fanned out; and every attempt at sending it.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("url", String(2048), nullable=False),
    Column("enabled_events", Json, nullable=False),  # event types, or ["*"]
    Column("description", String(1000), nullable=True),
    Column("metadata", Json, nullable=False),
    Column("status", String(16), nullable=False),  # enabled | disabled
    Column("disabled_reason", String(16), nullable=True),  # gone | failing | requested
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "merchant_id", "livemode", "created_at"),
)

webhook_endpoint_secrets = Table(
    "webhook_endpoint_secrets",
    metadata,
    Column("id", Id, primary_key=True),
    Column("endpoint_id", Id, ForeignKey("webhook_endpoints.id"), nullable=False, index=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("secret", Sealed(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),  # None: the current secret
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("endpoint_id", Id, ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("event_id", Id, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # exact bytes signed and sent, on every attempt
    Column("status", String(16), nullable=False),  # pending | succeeded | failed
    Column("step", Integer, nullable=False),  # attempts in the current run (a replay resets)
    Column("attempt_count", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("locked_until", UTCDateTime(), nullable=True),  # a worker's lease while it sends
    Column("started_at", UTCDateTime(), nullable=True),  # the current run's first attempt
    Column("delivered_at", UTCDateTime(), nullable=True),  # the latest success
    Column("created_at", UTCDateTime(), nullable=False),
    # A redelivered event (the stream is at least once) finds its delivery already there.
    UniqueConstraint("endpoint_id", "event_id"),
    # What every worker polls: only deliveries still to send, by due time.
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index(None, "endpoint_id", "created_at"),
    Index(None, "endpoint_id", "delivered_at"),  # an endpoint's latest success
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("webhook_deliveries.id"), nullable=False, index=True),
    Column("attempted_at", UTCDateTime(), nullable=False),
    Column("status_code", Integer, nullable=True),  # None: no answer (see error)
    Column("error", String(500), nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("response_body", Text, nullable=True),  # an excerpt
)

# --- gateways -------------------------------------------------------------------------------------
# A merchant's own account at a gateway. Credentials are sealed with the keyring, bound to the
# row; only what a browser may see (a publishable key) is kept in clear.
gateway_accounts = Table(
    "gateway_accounts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("provider", String(16), nullable=False),  # stripe | braintree | sandbox
    Column("credentials", Sealed(), nullable=False),  # JSON, the provider's own fields
    Column("publishable_key", String(255), nullable=True),  # Stripe pk_…, Braintree tokenization
    Column("status", String(16), nullable=False),  # active | deleted
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "merchant_id", "livemode", "created_at"),
)

# A merchant's routing rules, one document per mode: an ordered list of rules (each a match and
# an ordered list of gateway accounts to try), then the default order.
gateway_routing = Table(
    "gateway_routing",
    metadata,
    Column("merchant_id", Id, ForeignKey("merchants.id"), primary_key=True),
    Column("livemode", Boolean, primary_key=True),
    Column("rules", Json, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Gateway webhooks as received: stored raw before anything else, then processed by the worker.
# The unique constraint is the dedupe: a provider's event id is stored once per endpoint.
inbound_webhooks = Table(
    "inbound_webhooks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("account_id", Id, nullable=False),  # the gateway account (the URL's endpoint id)
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("event_id", String(255), nullable=False),  # the provider's
    Column("event_type", String(128), nullable=False),
    Column("subject", String(255), nullable=True),  # the gateway object it is about
    Column("payload", Text, nullable=False),  # the raw body, as verified
    Column("status", String(16), nullable=False),  # pending | processed | failed
    Column("attempt_count", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("locked_until", UTCDateTime(), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("processed_at", UTCDateTime(), nullable=True),
    UniqueConstraint("provider", "account_id", "event_id"),
    Index(
        "ix_inbound_webhooks_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index(None, "merchant_id", "status", "received_at"),
)

# Cards tokenized by the sandbox's hosted fields. The number itself is never stored: a token
# keeps the test card's behaviour and what may be shown (brand, last four, country, expiry).
sandbox_tokens = Table(
    "sandbox_tokens",
    metadata,
    Column("id", Id, primary_key=True),  # tok_…
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("behaves_as", String(64), nullable=False),  # a test token such as tok_visa
    Column("brand", String(16), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("country", String(2), nullable=True),
    Column("exp_month", Integer, nullable=False),
    Column("exp_year", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# --- operators ------------------------------------------------------------------------------------
# The people who run a merchant's account. One account per email address (stored in lower case),
# so signing in needs only the address. Failed sign-ins in a row and the lock they lead to live
# on the row, updated in the same statement that counts them.
operators = Table(
    "operators",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("email", String(254), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # owner | admin | developer | finance | …
    Column("password_hash", String(255), nullable=False),  # argon2id, with its parameters
    Column("password_changed_at", UTCDateTime(), nullable=False),
    Column("failed_sign_ins", Integer, nullable=False),
    Column("locked_until", UTCDateTime(), nullable=True),
    # TOTP: the seed sealed with the keyring (bound to the row), when enrolment was confirmed
    # (NULL: begun, not confirmed), and the last time step accepted, so a code works once.
    Column("totp_seed", Sealed(), nullable=True),
    Column("totp_confirmed_at", UTCDateTime(), nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
    # Wrong second factors in a row: at five the account locks and its sessions end.
    Column("second_factor_failures", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "merchant_id"),
)

# Single-use recovery codes, stored as keyed hashes (high-entropy codes need no slow hash).
operator_recovery_codes = Table(
    "operator_recovery_codes",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("used_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "operator_id"),
)

# The hashes of an operator's earlier passwords, newest last, for the "not one of the last four"
# rule.
operator_password_history = Table(
    "operator_password_history",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("replaced_at", UTCDateTime(), nullable=False),
    Index(None, "operator_id", "id"),
)

# Console sessions. The cookie holds a 256-bit random token; only its SHA-256 is stored, so a copy
# of the database signs nobody in. `id` names a session in lists and revocations.
operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),  # of the sign-in: the absolute limit
    Column("last_seen_at", UTCDateTime(), nullable=False),  # the idle limit
    Column("second_factor_at", UTCDateTime(), nullable=True),  # NULL: the password only
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("ip", String(45), nullable=True),
    Column("user_agent", String(255), nullable=True),
    # A WebAuthn ceremony under way in this session: its challenge (base64url) and when it was
    # made. Taken (cleared) by the response that answers it, so it is answered once.
    Column("webauthn_challenge", String(128), nullable=True),
    Column("webauthn_challenge_at", UTCDateTime(), nullable=True),
    Index(None, "operator_id", "revoked_at"),
)

# Operators' WebAuthn credentials (security keys, platform authenticators): the public key and
# the signature counter, keyed by the credential id the authenticator chose (base64url).
operator_webauthn_credentials = Table(
    "operator_webauthn_credentials",
    metadata,
    Column("id", Id, primary_key=True),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False),
    Column("credential_id", String(1400), nullable=False, unique=True),
    Column("public_key", Text, nullable=False),  # COSE, base64url
    Column("sign_count", BigInteger, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Index(None, "operator_id"),
)

# Tokens for apps acting for an operator: short-lived access tokens and single-use refresh
# tokens. Each sign-in starts a family; a refresh replaces the pair within the family, and a
# refresh token presented twice revokes the family (RFC 9700 section 4.14). Only hashes stored.
operator_tokens = Table(
    "operator_tokens",
    metadata,
    Column("id", Id, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),  # access | refresh
    Column("family_id", Id, nullable=False),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),  # a refresh token, once exchanged
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("family_expires_at", UTCDateTime(), nullable=False),  # no refresh past this
    Index(None, "family_id"),
    Index(None, "operator_id"),
)

# Invitations to a merchant's console: a single-use link (only its token's hash is stored) that
# lets the invitee choose a password within 24 hours.
operator_invitations = Table(
    "operator_invitations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("invited_by", Id, ForeignKey("operators.id"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("accepted_at", UTCDateTime(), nullable=True),
    Index(None, "merchant_id", "created_at"),
)

# A customer's login at a bank aggregator, as the aggregator's item: only its access token
# (sealed, bound to the row) and the references to it. One item may hold several accounts.
bank_items = Table(
    "bank_items",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("provider", String(16), nullable=False),  # sandbox | plaid
    Column("provider_item_id", String(255), nullable=False),
    Column("institution", String(255), nullable=True),
    Column("access_token", Sealed(), nullable=False),
    Column("token_rotated_at", UTCDateTime(), nullable=True),  # `bank rotate-tokens` resumes here
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("provider", "provider_item_id"),
    Index(None, "merchant_id", "livemode"),
)

# A linked bank account. In clear only references and what the customer is shown anyway (the
# institution, the type, the last four digits); the full account and routing numbers and the
# micro-deposit amounts are sealed, bound to the row.
bank_accounts = Table(
    "bank_accounts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("item_id", Id, ForeignKey("bank_items.id"), nullable=False),
    Column("provider_account_id", String(255), nullable=False),
    Column("customer_id", Id, nullable=True),
    Column("institution", String(255), nullable=True),
    Column("account_type", String(16), nullable=False),  # checking | savings
    Column("last4", String(4), nullable=False),
    Column("numbers", Sealed(), nullable=True),  # JSON {account, routing}; None until Auth has them
    Column("micro_deposits", Sealed(), nullable=True),  # JSON [cents, cents]
    Column("micro_deposits_sent_at", UTCDateTime(), nullable=True),  # None: still to send
    Column("verification_status", String(40), nullable=False),
    Column("verification_attempts", Integer, nullable=False),
    Column("verify_by", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("item_id", "provider_account_id"),
    Index(None, "merchant_id", "livemode", "created_at"),
    Index(None, "verification_status", "verify_by"),  # the expiry sweep
)

# A PaymentIntent paid from a linked bank account: `processing` until `settles_at`, then
# `succeeded`, or `returned` with the bank's NACHA return code (R01: insufficient funds).
bank_debits = Table(
    "bank_debits",
    metadata,
    Column("id", Id, primary_key=True),
    Column("merchant_id", Id, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("payment_intent_id", Id, ForeignKey("payment_intents.id"), nullable=False),
    Column("bank_account_id", Id, ForeignKey("bank_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # processing | succeeded | returned
    Column("return_code", String(3), nullable=True),
    Column("settles_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "status", "settles_at"),  # the settlement sweep
    Index(None, "payment_intent_id"),
)
