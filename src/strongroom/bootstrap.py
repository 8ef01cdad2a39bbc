"""The composition root: reads settings, builds adapters, hands out the services."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta

from opentelemetry.sdk.trace.export import SpanExporter

from strongroom.adapters.banks.plaid import PlaidProvider
from strongroom.adapters.banks.plaid_webhooks import PlaidWebhookVerifier
from strongroom.adapters.banks.port import BankProvider, BankRail
from strongroom.adapters.banks.sandbox import SandboxBankProvider, SandboxBankRail
from strongroom.adapters.db.engine import Engines, create_engines
from strongroom.adapters.email import mailer_from_url
from strongroom.adapters.events.port import EventBus, event_bus_from_url
from strongroom.adapters.gateways.sandbox import SandboxGateway
from strongroom.adapters.http.safe_client import SafeClient
from strongroom.adapters.kms.envelope import Envelope
from strongroom.adapters.kms.port import Keyring, keyring_from_url
from strongroom.adapters.observability import Metrics, Tracing, tracing_from_settings
from strongroom.adapters.policy import RegoPolicy
from strongroom.adapters.ratelimit import storage_from_url, windows_from_url
from strongroom.adapters.reporting import reporting_store_from_url
from strongroom.domain.clock import Clock, SystemClock
from strongroom.service_layer.app_tokens import AppTokens
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.audit_sequencer import Sequencer, SigningKeys
from strongroom.service_layer.authorization import Authorizer
from strongroom.service_layer.bank_accounts import BankAccounts
from strongroom.service_layer.bank_debits import BankDebits
from strongroom.service_layer.bank_tokens import BankTokens
from strongroom.service_layer.gateway_accounts import GatewayAccounts
from strongroom.service_layer.gateways import Gateways
from strongroom.service_layer.inbound_webhooks import InboundWebhooks
from strongroom.service_layer.invitations import Invitations
from strongroom.service_layer.login_throttle import LoginThrottle
from strongroom.service_layer.merchants import Merchants
from strongroom.service_layer.operators import Operators
from strongroom.service_layer.outbox import Relay
from strongroom.service_layer.passwords import Argon2Parameters, Passwords
from strongroom.service_layer.payments import Payments
from strongroom.service_layer.rate_limits import RateLimits, defaults_from
from strongroom.service_layer.reporting import Reporting
from strongroom.service_layer.second_factors import SecondFactors
from strongroom.service_layer.sessions import Sessions
from strongroom.service_layer.unit_of_work import UnitOfWork
from strongroom.service_layer.webauthn_factor import WebAuthnFactor
from strongroom.service_layer.webhooks import Webhooks
from strongroom.settings import Settings


@dataclass
class Container:
    settings: Settings
    engines: Engines
    uow: UnitOfWork
    clock: Clock
    sandbox: SandboxGateway
    payments: Payments
    merchants: Merchants
    audit: AuditLog
    keyring: Keyring  # master keys; files or KMS keys are made on first use, not here
    envelope: Envelope  # seals and opens every Sealed column
    sequencer: Sequencer  # the audit log's: run by the worker loops
    bus: EventBus  # the event stream; consumers subscribe in bootstrap
    relay: Relay  # outbox → event stream: run by the worker loops
    metrics: Metrics  # this container's Prometheus registry, served at /metrics
    tracing: Tracing  # spans for requests, worker passes and gateway calls (or none)
    webhooks: Webhooks  # merchant webhooks: the stream's fan-out consumer and the delivery loop
    reporting: Reporting  # the read side: the stream's `reporting` consumer and the reports
    gateway_accounts: GatewayAccounts  # merchants' own gateway accounts and routing rules
    gateways: Gateways  # routing and a circuit breaker per gateway account
    inbound: InboundWebhooks  # gateways' webhooks: verified, stored, processed by the worker
    operators: Operators  # the people who run merchants' accounts, and their sign-in
    second_factors: SecondFactors  # operators' TOTP and recovery codes
    sessions: Sessions  # operators' console sessions and their CSRF tokens
    app_tokens: AppTokens  # access and refresh tokens for apps acting for an operator
    invitations: Invitations  # single-use links by which owners add operators
    webauthn: WebAuthnFactor  # security keys as operators' second factor
    authz: Authorizer  # asks the Rego policy before every command and query
    rate_limits: RateLimits | None  # per key and per address; None when turned off
    bank_accounts: BankAccounts  # customers' linked bank accounts and their verification
    bank_rail: BankRail  # micro-deposits and debits (the sandbox's keeps deposits in-process)
    bank_tokens: BankTokens  # rotates bank items' access tokens at their provider
    bank_debits: BankDebits  # PaymentIntents paid from bank accounts, settled by the worker

    async def start(self) -> None:
        """Connect what needs connecting before the worker loops run (the event stream)."""
        await self.bus.start()

    async def aclose(self) -> None:
        await self.bus.close()
        await self.webhooks.aclose()
        await self.gateways.aclose()
        if self.rate_limits is not None:
            await self.rate_limits.aclose()
        await self.reporting.close()
        await self.engines.dispose()
        # Flushing buffered spans blocks on the exporter: off the event loop.
        await asyncio.to_thread(self.tracing.shutdown)


def bootstrap(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    span_exporter: SpanExporter | None = None,
) -> Container:
    """`span_exporter` replaces the exporter STRONGROOM_TRACING picks (tests collect spans in
    memory with it); tracing 'off' still means no spans at all."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    tracing = tracing_from_settings(settings.tracing, exporter=span_exporter)
    engines = create_engines(settings.database_url, pool_size=settings.db_pool_size)
    # Events carry objects as the API shows them; imported here, not at the top, because the
    # API package itself imports this module.
    from strongroom.entrypoints.api.rendering import api_object

    uow = UnitOfWork(engines, clock=clock, snapshot=api_object)
    audit = AuditLog(
        uow,
        clock,
        pseudonym_key=derive_key(settings, b"audit pseudonyms"),
        payment_events=settings.audit_payment_events,
    )
    sandbox = SandboxGateway(
        engines.write, read_engine=engines.read, public_url=settings.public_url, clock=clock
    )
    keyring = keyring_from_url(settings.kms_url)
    envelope = Envelope(keyring)
    gateway_accounts = GatewayAccounts(
        uow, envelope, clock, audit=audit, allow_base_url=settings.env != "production"
    )
    gateways = Gateways(
        gateway_accounts,
        sandbox,
        clock,
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_seconds,
        connect_timeout=settings.gateway_connect_timeout_seconds,
        read_timeout=settings.gateway_read_timeout_seconds,
    )
    policy = RegoPolicy()
    authz = Authorizer(policy, clock, audit, enforced=settings.policy_enforced)
    rail = SandboxBankRail()
    debits = BankDebits(
        uow,
        envelope,
        clock,
        audit=audit,
        rail=rail,
        settlement_days=settings.bank_settlement_days,
    )
    payments = Payments(
        uow,
        gateways,
        clock,
        authz=authz,
        max_amount=settings.max_amount,
        recovery_grace=timedelta(seconds=settings.recovery_grace_seconds),
        # A worker holds an operation as long as a request holds its key: either may be the
        # one finishing it, and neither should be taken over while it is still working.
        recovery_lease=timedelta(seconds=settings.idempotency_lock_seconds),
        audit=audit,
        tracing=tracing,
        debits=debits,
    )
    merchants = Merchants(
        uow,
        clock,
        hash_secret=settings.secret_key.get_secret_value().encode(),
        key_cache_ttl=timedelta(seconds=settings.api_key_cache_seconds),
        audit=audit,
        scopes=policy.scopes,
    )
    bus = event_bus_from_url(settings.events_url)
    metrics = Metrics()
    webhooks = Webhooks(
        uow,
        envelope,
        SafeClient(
            allow_loopback=settings.webhook_allow_loopback,
            connect_timeout=settings.webhook_connect_timeout_seconds,
            read_timeout=settings.webhook_read_timeout_seconds,
            max_response_bytes=settings.webhook_max_response_bytes,
        ),
        clock,
        allow_loopback=settings.webhook_allow_loopback,
        # Long enough for the slowest attempt (resolution, connect, read) and its recording,
        # so a live worker never loses a delivery it is still sending.
        lease=timedelta(
            seconds=2 * settings.webhook_connect_timeout_seconds
            + settings.webhook_read_timeout_seconds
            + 30
        ),
        observe=metrics.record_webhook_delivery,
        audit=audit,
    )
    bus.subscribe("webhooks", webhooks.handle)
    # Reports are served from their own store; nothing is connected until first used.
    reporting = Reporting(
        reporting_store_from_url(settings.reporting_url),
        engines,
        clock,
        cache_for=timedelta(seconds=settings.report_cache_seconds),
    )
    bus.subscribe("reporting", reporting.apply)
    banks = bank_provider(settings, clock)
    bank_accounts = BankAccounts(
        uow,
        envelope,
        clock,
        audit=audit,
        provider=banks,
        rail=rail,
        webhook_url=f"{settings.public_url.rstrip('/')}/v1/webhooks/{settings.bank_provider}",
    )
    counters = storage_from_url(settings.ratelimit_url, key_prefix=settings.ratelimit_prefix)
    throttle = LoginThrottle(counters)
    argon2 = Argon2Parameters(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    operators = Operators(uow, clock, Passwords(argon2), audit, throttle=throttle)
    return Container(
        settings,
        engines,
        uow,
        clock,
        sandbox,
        payments,
        merchants,
        audit,
        keyring=keyring,
        envelope=envelope,
        sequencer=Sequencer(uow, clock, SigningKeys(envelope, clock)),
        bus=bus,
        relay=Relay(uow, bus, clock),
        metrics=metrics,
        tracing=tracing,
        webhooks=webhooks,
        reporting=reporting,
        gateway_accounts=gateway_accounts,
        gateways=gateways,
        inbound=InboundWebhooks(
            uow,
            clock,
            accounts=gateway_accounts,
            gateways=gateways,
            payments=payments,
            audit=audit,
            banks=bank_accounts,
            plaid=PlaidWebhookVerifier(banks.webhook_verification_key, clock),
        ),
        operators=operators,
        second_factors=SecondFactors(
            uow,
            clock,
            envelope,
            operators,
            audit,
            code_key=derive_key(settings, b"operator recovery codes"),
        ),
        sessions=Sessions(uow, clock, audit, csrf_key=derive_key(settings, b"console csrf")),
        app_tokens=AppTokens(uow, clock, audit),
        invitations=Invitations(
            uow,
            clock,
            operators,
            mailer_from_url(settings.mail_url),
            audit,
            public_url=settings.public_url,
        ),
        webauthn=WebAuthnFactor(uow, clock, audit, public_url=settings.public_url),
        authz=authz,
        rate_limits=RateLimits(
            windows_from_url(settings.ratelimit_url, key_prefix=settings.ratelimit_prefix),
            defaults_from(settings.ratelimit_per_key, settings.ratelimit_per_address),
            on_refusal=metrics.record_rate_limit_refusal,
            on_error=lambda route, outcome: metrics.record_rate_limiter_error(route, outcome),
        )
        if settings.ratelimit_enabled
        else None,
        bank_accounts=bank_accounts,
        bank_rail=rail,
        bank_tokens=BankTokens(uow, envelope, clock, audit=audit, provider=banks),
        bank_debits=debits,
    )


def bank_provider(settings: Settings, clock: Clock) -> BankProvider:
    if settings.bank_provider == "plaid":
        return PlaidProvider(
            settings.plaid_client_id, settings.plaid_secret.get_secret_value(), settings.plaid_url
        )
    return SandboxBankProvider(clock)


def derive_key(settings: Settings, purpose: bytes) -> bytes:
    """A key for one purpose, derived from the server's secret (HMAC as a PRF), so each use
    of the secret gets its own key and none can be computed from another."""
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"strongroom/v1 " + purpose, hashlib.sha256).digest()
