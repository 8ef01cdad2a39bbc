"""Configuration from the environment (prefix STRONGROOM_), validated once at start-up."""

from __future__ import annotations

from typing import Literal

from limits import parse
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-insecure-secret-change-me"  # noqa: S105 - a sentinel, refused in production


class InsecureConfiguration(RuntimeError):
    """Raised at start-up when production is asked for with a default or missing secret."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore")

    env: Literal["development", "test", "production"] = Field(
        "development", description="production refuses default secrets and turns off dev aids."
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///./var/strongroom.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///… or postgresql+asyncpg://…",
    )
    secret_key: SecretStr = Field(
        SecretStr(DEV_SECRET),
        description="Key for the keyed hashes of API keys. Changing it invalidates every key.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL customers' browsers reach (sandbox 3-D Secure pages).",
    )
    tokenization_url: str | None = Field(
        None,
        description="Base URL of the sandbox's hosted card fields, an origin of its own so the "
        "merchant's page never sees a card number (default: public_url).",
    )
    stripe_js_url: str = Field(
        "https://js.stripe.com/v3/",
        pattern=r"^https?://[^\s\"'<>]+$",
        description="Stripe.js, for the demo checkout of a merchant paying through Stripe.",
    )
    braintree_dropin_url: str = Field(
        "https://js.braintreegateway.com/web/dropin/1.43.0/js/dropin.min.js",
        pattern=r"^https?://[^\s\"'<>]+$",
        description="Braintree's Drop-in UI, for the demo checkout of a merchant paying "
        "through Braintree.",
    )
    mail_url: str = Field(
        "file://./var/mail",
        pattern=r"^(file|smtp)://\S+$",
        description="Where operators' emails go: file://<directory> (development: .eml files) "
        "or smtp://[user:password@]host:port[?from=…&starttls=1].",
    )
    argon2_time_cost: int = Field(
        2, ge=1, le=20, description="argon2id passes over memory for operators' passwords."
    )
    argon2_memory_kib: int = Field(
        19 * 1024,
        ge=8,
        le=4 * 1024 * 1024,
        description="argon2id memory for operators' passwords, in KiB (OWASP: at least 19 MiB; "
        "lower only for tests).",
    )
    bank_provider: Literal["sandbox", "plaid"] = Field(
        "sandbox",
        description="Where customers link bank accounts: the embedded sandbox (test mode "
        "only) or Plaid.",
    )
    plaid_client_id: str = Field("", description="Plaid's client id (bank_provider=plaid).")
    plaid_secret: SecretStr = Field(
        SecretStr(""), description="Plaid's secret for plaid_url's environment."
    )
    plaid_url: str = Field(
        "https://sandbox.plaid.com",
        pattern=r"^https?://\S+$",
        description="Plaid's API: https://sandbox.plaid.com or https://production.plaid.com.",
    )
    bank_settlement_days: int = Field(
        2,
        ge=0,
        le=30,
        description="Days a sandbox bank debit stays processing before it settles (or is "
        "returned).",
    )
    ratelimit_url: str = Field(
        "memory://",
        pattern=r"^(memory://|redis://\S+)$",
        description="Where rate-limit counters live: memory:// (this process) or "
        "redis://host:6379[/db] (shared by every process).",
    )
    ratelimit_prefix: str = Field(
        "strongroom",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Prefix of the rate-limit counters' keys in Redis (one per installation).",
    )
    ratelimit_enabled: bool = Field(
        True,
        description="Limit API requests per key and per client address (see "
        "ratelimit_per_key and ratelimit_per_address). Off only behind a proxy that limits.",
    )
    ratelimit_per_key: dict[str, str] = Field(
        default_factory=lambda: {"reads": "100/second", "writes": "100/second"},
        description="Per API key, by route class (reads, writes), as JSON; a merchant may set "
        "its own with `strongroom merchants rate-limits`.",
    )
    ratelimit_per_address: dict[str, str] = Field(
        default_factory=lambda: {
            "reads": "200/second",
            "writes": "200/second",
            "login": "10/second",
            "webhooks": "200/second",
        },
        description="Per client address, by route class (reads, writes, login, webhooks), as JSON.",
    )
    max_amount: int = Field(
        99_999_999, gt=0, description="Largest amount accepted, in minor units of any currency."
    )
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest request body accepted.")
    idempotency_retention_hours: int = Field(
        24, ge=24, description="How long Idempotency-Keys are kept before the worker prunes them."
    )
    idempotency_lock_seconds: int = Field(
        60,
        gt=0,
        description="How long a request holds its Idempotency-Key; after that a retry resumes it.",
    )
    recovery_grace_seconds: int = Field(
        30,
        ge=0,
        description="Age of an unfinished gateway operation before the worker completes it.",
    )
    worker_interval_seconds: float = Field(1.0, gt=0, description="Worker loop poll interval.")
    worker_batch_size: int = Field(
        500, gt=0, description="Most events or deliveries one worker takes per pass of a loop."
    )
    api_key_cache_seconds: float = Field(
        5,
        ge=0,
        description="How long a process trusts a key it has looked up (0: always ask the "
        "database). Revocation reaches other processes within this time.",
    )
    kms_url: str = Field(
        "local:///./var/keyring",
        description="Master keys for envelope encryption: local:///<directory> (files, mode "
        "0600) or aws-kms:///<alias name>?region=…[&endpoint_url=…] (AWS KMS).",
    )
    audit_payment_events: bool = Field(
        True,
        description="Record payment operations (create, confirm, capture, cancel) in the audit "
        "log. Security events (keys, refunds, failed logins, rotation) are always recorded.",
    )
    events_url: str = Field(
        "memory://",
        description="Event stream: memory:// (in-process) or nats://host:4222[?stream=NAME] "
        "(NATS JetStream; the stream and durable consumers are created on start).",
    )
    reporting_url: str = Field(
        "duckdb:///./var/reporting.duckdb",
        description="Reporting store: duckdb:///<file> or clickhouse://host:9000/<database>.",
    )
    report_cache_seconds: float = Field(
        5,
        ge=0,
        description="How long GET /v1/reports serves a computed report again before asking the "
        "reporting store anew (0: every request asks). Exports and the command line always ask.",
    )
    outbox_retention_hours: int = Field(
        24, ge=1, description="How long published events stay in the outbox before pruning."
    )
    breaker_fail_max: int = Field(
        5,
        ge=1,
        description="Failures in a row (timeouts, 5xx, refused) that open a gateway's "
        "circuit breaker.",
    )
    breaker_reset_seconds: float = Field(
        30, gt=0, description="How long an open breaker fails calls fast before one trial call."
    )
    gateway_connect_timeout_seconds: float = Field(
        5, gt=0, description="Connect timeout for calls to Stripe and Braintree."
    )
    gateway_read_timeout_seconds: float = Field(
        30, gt=0, description="Read timeout for calls to Stripe and Braintree."
    )
    policy_enforced: bool = Field(
        True,
        description="Benchmarking only: false allows every request without asking the "
        "authorization policy, to measure what the policy costs (refused when "
        "STRONGROOM_ENV=production).",
    )
    webhook_allow_loopback: bool = Field(
        False,
        description="Development only: let webhook endpoints point at loopback addresses "
        "(refused when STRONGROOM_ENV=production).",
    )
    webhook_connect_timeout_seconds: float = Field(
        5, gt=0, description="Connect timeout for a webhook delivery."
    )
    webhook_read_timeout_seconds: float = Field(
        10, gt=0, description="Read timeout for a webhook delivery."
    )
    webhook_max_response_bytes: int = Field(
        65_536, gt=0, description="Most of a receiver's response body read (and kept) per attempt."
    )
    tracing: Literal["off", "console", "otlp"] = Field(
        "off",
        description="OpenTelemetry spans: off, console (stderr) or otlp (to the OTEL_EXPORTER_"
        "OTLP_* endpoint).",
    )
    metrics_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token GET /metrics requires (empty: /metrics is open, as "
        "Prometheus scrapes usually are).",
    )
    db_pool_size: int = Field(10, gt=0, description="Connections per process (PostgreSQL).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    serve_worker: bool = Field(
        True, description="Run the worker loops inside `strongroom serve` (embedded mode)."
    )

    @field_validator("ratelimit_per_key", "ratelimit_per_address")
    @classmethod
    def _rates(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        classes = (
            ("reads", "writes")
            if info.field_name == "ratelimit_per_key"
            else ("reads", "writes", "login", "webhooks")
        )
        for name, rate in value.items():
            if name not in classes:
                raise ValueError(f"route classes are {', '.join(classes)}, not {name!r}")
            try:
                parse(rate)
            except ValueError:
                raise ValueError(f"{rate!r} is not a rate such as '100/second'") from None
        return value

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.bank_provider == "plaid" and not (
            self.plaid_client_id and self.plaid_secret.get_secret_value()
        ):
            raise ValueError(
                "STRONGROOM_BANK_PROVIDER=plaid needs STRONGROOM_PLAID_CLIENT_ID "
                "and STRONGROOM_PLAID_SECRET."
            )
        if self.env == "production":
            secret = self.secret_key.get_secret_value()
            if secret == DEV_SECRET or len(secret) < 32:
                raise InsecureConfiguration(
                    "STRONGROOM_SECRET_KEY must be set to a random value of at least 32 "
                    "characters when STRONGROOM_ENV=production."
                )
            if self.webhook_allow_loopback:
                raise InsecureConfiguration(
                    "STRONGROOM_WEBHOOK_ALLOW_LOOPBACK is a development setting; it cannot be "
                    "on when STRONGROOM_ENV=production."
                )
            if not self.policy_enforced:
                raise InsecureConfiguration(
                    "STRONGROOM_POLICY_ENFORCED=false is for benchmarks; it cannot be set when "
                    "STRONGROOM_ENV=production."
                )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
