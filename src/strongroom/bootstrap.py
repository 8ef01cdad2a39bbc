"""The composition root: reads settings, builds adapters, hands out the services."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta

from strongroom.adapters.db.engine import Engines, create_engines
from strongroom.adapters.gateways.sandbox import SandboxGateway
from strongroom.adapters.kms.envelope import Envelope
from strongroom.adapters.kms.port import Keyring, keyring_from_url
from strongroom.domain.clock import Clock, SystemClock
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.audit_sequencer import Sequencer, SigningKeys
from strongroom.service_layer.merchants import Merchants
from strongroom.service_layer.payments import Payments
from strongroom.service_layer.unit_of_work import UnitOfWork
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

    async def aclose(self) -> None:
        await self.engines.dispose()


def bootstrap(settings: Settings | None = None, *, clock: Clock | None = None) -> Container:
    settings = settings or Settings()
    clock = clock or SystemClock()
    engines = create_engines(settings.database_url, pool_size=settings.db_pool_size)
    uow = UnitOfWork(engines)
    audit = AuditLog(
        uow,
        clock,
        pseudonym_key=derive_key(settings, b"audit pseudonyms"),
        payment_events=settings.audit_payment_events,
    )
    sandbox = SandboxGateway(engines.write, public_url=settings.public_url, clock=clock)
    payments = Payments(
        uow,
        sandbox,
        clock,
        max_amount=settings.max_amount,
        recovery_grace=timedelta(seconds=settings.recovery_grace_seconds),
        # A worker holds an operation as long as a request holds its key: either may be the
        # one finishing it, and neither should be taken over while it is still working.
        recovery_lease=timedelta(seconds=settings.idempotency_lock_seconds),
        audit=audit,
    )
    merchants = Merchants(
        uow,
        clock,
        hash_secret=settings.secret_key.get_secret_value().encode(),
        key_cache_ttl=timedelta(seconds=settings.api_key_cache_seconds),
        audit=audit,
    )
    keyring = keyring_from_url(settings.kms_url)
    envelope = Envelope(keyring)
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
    )


def derive_key(settings: Settings, purpose: bytes) -> bytes:
    """A key for one purpose, derived from the server's secret (HMAC as a PRF), so each use
    of the secret gets its own key and none can be computed from another."""
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"strongroom/v1 " + purpose, hashlib.sha256).digest()
