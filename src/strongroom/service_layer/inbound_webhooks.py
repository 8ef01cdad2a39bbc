"""Inbound gateway webhooks (Stripe, Braintree, the sandbox): verified, stored raw, then
processed by the worker with retries.

  receive      verify the delivery with the provider's SDK (a failure is audited, stores
               nothing and raises InvalidRequest `webhook_signature_invalid`, a 400), then
               insert the raw body, insert-or-ignore on (provider, account, event id): a
               repeated or racing delivery finds the first row and is answered all the same.
  process_due  the worker leases due rows (FOR UPDATE SKIP LOCKED on PostgreSQL, SQLite's
               write lock otherwise; the lease outlives the transaction) and, for each, asks
               Payments to re-read the charge from the gateway and apply it. The event is only
               a trigger, so duplicates, late and out-of-order events change nothing a newer
               one would not. An error, or no intent with that reference yet, is retried with
               exponential backoff and jitter; after the last attempt the row is `failed`,
               listed by `list_failed` and put back by `replay`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import structlog
from sqlalchemy import Row, and_, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from strongroom.adapters.banks.plaid_webhooks import PlaidWebhookVerifier, WebhookRejected
from strongroom.adapters.banks.port import BankProviderError
from strongroom.adapters.db import tables as t
from strongroom.domain.audit import NO_ORIGIN, Actor, ActorType, AuditTag, Origin, Outcome
from strongroom.domain.clock import Clock
from strongroom.domain.errors import InvalidRequest, ResourceMissing, ServiceUnavailable
from strongroom.domain.ids import new_id
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.bank_accounts import BankAccounts
from strongroom.service_layer.gateway_accounts import Credentials, GatewayAccounts
from strongroom.service_layer.gateways import Gateways
from strongroom.service_layer.payments import Payments
from strongroom.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

_w = t.inbound_webhooks
# A literal, not a parameter, so the query matches the partial index ix_inbound_webhooks_due.
_PENDING = _w.c.status == literal_column("'pending'")
PROVIDERS = frozenset({"stripe", "braintree", "sandbox"})
SIGNATURE_INVALID = "webhook_signature_invalid"


class _Unverified(Exception):
    """Verification failed; `reason` is short and never quotes the body or a signature."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    """What a verified delivery says: its id at the provider, its type, and the reference of
    the charge it is about (None: nothing Strongroom acts on)."""

    event_id: str
    event_type: str
    subject: str | None


@dataclass(frozen=True)
class Received:
    id: str  # the stored row's (the first delivery's, for a duplicate)
    duplicate: bool


@dataclass(frozen=True)
class StoredWebhook:
    id: str
    provider: str
    account_id: str
    merchant_id: str
    event_id: str
    event_type: str
    subject: str | None
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    received_at: datetime
    processed_at: datetime | None


def _stored(row: Row[Any]) -> StoredWebhook:
    return StoredWebhook(
        id=row.id,
        provider=row.provider,
        account_id=row.account_id,
        merchant_id=row.merchant_id,
        event_id=row.event_id,
        event_type=row.event_type,
        subject=row.subject,
        status=row.status,
        attempt_count=row.attempt_count,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        received_at=row.received_at,
        processed_at=row.processed_at,
    )


class InboundWebhooks:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        *,
        accounts: GatewayAccounts,
        gateways: Gateways,
        payments: Payments,
        audit: AuditLog,
        banks: BankAccounts | None = None,
        plaid: PlaidWebhookVerifier | None = None,
        lease: timedelta = timedelta(minutes=2),
        max_attempts: int = 10,
        first_delay: timedelta = timedelta(seconds=10),
        max_delay: timedelta = timedelta(hours=1),
        stripe_tolerance: int = 300,
        rng: random.Random | None = None,
    ) -> None:
        self.uow = uow
        self.clock = clock
        self.accounts = accounts
        self.gateways = gateways
        self.payments = payments
        self.audit = audit
        self.banks = banks
        self.plaid = plaid
        self.lease = lease
        self.max_attempts = max_attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.stripe_tolerance = stripe_tolerance
        # Jitter only spreads retries out; it needs no cryptographic randomness.
        self.rng = rng or random.Random()  # noqa: S311

    # --- receiving --------------------------------------------------------------------------------
    async def receive(
        self,
        provider: str,
        account_id: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        origin: Origin = NO_ORIGIN,
    ) -> Received:
        """Verify and store one delivery. `headers` must look names up case-insensitively
        (Starlette's do). Raises ResourceMissing (404) for an unknown endpoint and
        InvalidRequest `webhook_signature_invalid` (400) when verification fails."""
        creds = None
        if provider in PROVIDERS:
            creds = await self.accounts.account_for_webhook(provider, account_id)
        if creds is None:
            raise ResourceMissing(  # param "id": the path's, so a 404
                f"No such webhook endpoint: '{provider}/{account_id[:40]}'", param="id"
            )
        account = creds.account
        try:
            verified = await self._verify(provider, creds, body, headers)
            payload = body.decode("utf-8")
        except (_Unverified, UnicodeDecodeError) as exc:
            reason = exc.reason if isinstance(exc, _Unverified) else "body is not UTF-8"
            await self.audit.record_alone(
                self.audit.event(
                    AuditTag.WEBHOOK_VERIFY,
                    actor=Actor(ActorType.ANONYMOUS),
                    outcome=Outcome.FAILURE,
                    merchant_id=account.merchant_id,
                    livemode=account.livemode,
                    origin=origin,
                    resource=("gateway_account", account.id),
                    details={"provider": provider, "reason": reason},
                )
            )
            raise InvalidRequest(
                "The webhook's signature could not be verified.", code=SIGNATURE_INVALID
            ) from None
        return await self._store(
            provider, account.id, account.merchant_id, account.livemode, verified, payload, origin
        )

    async def receive_plaid(
        self, body: bytes, headers: Mapping[str, str], *, origin: Origin = NO_ORIGIN
    ) -> Received | None:
        """Verify and store one of Plaid's deliveries (its Plaid-Verification JWT; see
        PlaidWebhookVerifier). Plaid's webhooks carry no event id, so a delivery is known by
        its body's SHA-256: a retry of the same webhook is a duplicate. None: verified, but
        about no item of ours (answered 200, so Plaid stops sending it)."""
        if self.plaid is None or self.banks is None:
            raise ResourceMissing("No such webhook endpoint: 'plaid'", param="id")
        try:
            await self.plaid.verify(headers.get("plaid-verification"), body)
            payload = body.decode("utf-8")
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except (WebhookRejected, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
            reason = exc.reason if isinstance(exc, WebhookRejected) else "body is not JSON"
            await self.audit.record_alone(
                self.audit.event(
                    AuditTag.WEBHOOK_VERIFY,
                    actor=Actor(ActorType.ANONYMOUS),
                    outcome=Outcome.FAILURE,
                    origin=origin,
                    details={"provider": "plaid", "reason": reason},
                )
            )
            raise InvalidRequest(
                "The webhook's signature could not be verified.", code=SIGNATURE_INVALID
            ) from None
        except BankProviderError as exc:  # Plaid's keys could not be fetched: Plaid retries
            raise ServiceUnavailable(
                "The webhook could not be verified just now; retry.", code="bank_provider_error"
            ) from exc
        item = await self.banks.item_for_webhook(str(doc.get("item_id", "")))
        if item is None:
            log.info("plaid webhook for an unknown item", event_type=_plaid_type(doc))
            return None
        verified = Verified(
            event_id="sha256:" + hashlib.sha256(body).hexdigest(),
            event_type=_plaid_type(doc),
            subject=str(doc["account_id"]) if doc.get("account_id") else None,
        )
        return await self._store(
            "plaid", item.id, item.merchant_id, item.livemode, verified, payload, origin
        )

    async def _store(
        self,
        provider: str,
        account_id: str,
        merchant_id: str,
        livemode: bool,
        verified: Verified,
        payload: str,
        origin: Origin,
    ) -> Received:
        """Insert a verified delivery, or find the first copy of it."""
        now = self.clock.now()
        row_id = new_id("iwh")
        values = {
            "id": row_id,
            "provider": provider,
            "account_id": account_id,
            "merchant_id": merchant_id,
            "livemode": livemode,
            "event_id": verified.event_id[:255],
            "event_type": verified.event_type[:128],
            "subject": verified.subject[:255] if verified.subject else None,
            "payload": payload,
            "status": "pending",
            "attempt_count": 0,
            "next_attempt_at": now,
            "locked_until": None,
            "last_error": None,
            "received_at": now,
            "processed_at": None,
        }
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            inserted = await _insert_or_ignore(conn, values)
            if inserted:
                await tx.repo.add_audit_event(
                    self.audit.event(
                        AuditTag.WEBHOOK_VERIFY,
                        actor=Actor(ActorType.ANONYMOUS),
                        merchant_id=merchant_id,
                        livemode=livemode,
                        origin=origin,
                        resource=("inbound_webhook", row_id),
                        details={"provider": provider, "event_type": values["event_type"]},
                    )
                )
            else:
                row_id = (
                    await conn.execute(
                        select(_w.c.id).where(
                            _w.c.provider == provider,
                            _w.c.account_id == account_id,
                            _w.c.event_id == values["event_id"],
                        )
                    )
                ).scalar_one()
            await tx.commit()
        return Received(row_id, duplicate=not inserted)

    async def _verify(
        self, provider: str, creds: Credentials, body: bytes, headers: Mapping[str, str]
    ) -> Verified:
        match provider:
            case "stripe":
                return self._verify_stripe(creds, body, headers)
            case "braintree":
                return await self._verify_braintree(creds, body)
            case _:
                return self._verify_sandbox(creds, body, headers)

    def _verify_stripe(
        self, creds: Credentials, body: bytes, headers: Mapping[str, str]
    ) -> Verified:
        from strongroom.adapters.gateways.stripe import (
            WebhookSignatureInvalid,
            verify_stripe_webhook,
        )

        try:
            event = verify_stripe_webhook(
                body,
                headers.get("stripe-signature"),
                list(creds.fields.get("webhook_secrets") or []),
                tolerance=self.stripe_tolerance,
            )
        except WebhookSignatureInvalid as exc:
            raise _Unverified(exc.reason) from None
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str) or not event_id:
            raise _Unverified("event without an id or a type")
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        subject: Any = None
        if isinstance(obj, dict):
            match obj.get("object"):
                case "payment_intent":
                    subject = obj.get("id")
                case "charge":
                    subject = obj.get("payment_intent")
        return Verified(event_id, event_type, subject if isinstance(subject, str) else None)

    async def _verify_braintree(self, creds: Credentials, body: bytes) -> Verified:
        from strongroom.adapters.gateways.braintree import (
            BraintreeGateway,
            WebhookSignatureInvalid,
            parse_braintree_webhook,
        )

        try:
            form = parse_qs(body.decode("ascii"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise _Unverified("body is not a form") from None
        signature, payload = form.get("bt_signature"), form.get("bt_payload")
        if not signature or not payload or len(signature) != 1 or len(payload) != 1:
            raise _Unverified("bt_signature or bt_payload missing")
        guarded = await self.gateways.get(creds.account.merchant_id, creds.account.id)
        gateway = guarded.inner
        if not isinstance(gateway, BraintreeGateway):
            raise _Unverified("not a braintree account")
        try:
            note = parse_braintree_webhook(gateway, signature[0], payload[0])
        except WebhookSignatureInvalid:
            # The SDK's message is not ours to vouch for: a fixed reason goes to the log.
            raise _Unverified("signature does not match payload") from None
        return Verified(note.dedupe_key, note.kind, note.transaction_id)

    def _verify_sandbox(
        self, creds: Credentials, body: bytes, headers: Mapping[str, str]
    ) -> Verified:
        secret = creds.fields.get("webhook_secret")
        wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
        if not isinstance(secret, str) or any(not headers.get(h) for h in wanted):
            raise _Unverified("missing Standard Webhooks headers")
        try:
            event = Webhook(secret).verify(body, {h: headers[h] for h in wanted})
        except (WebhookVerificationError, ValueError):
            raise _Unverified("signature does not verify") from None
        event_type = event.get("type") if isinstance(event, dict) else None
        if not isinstance(event_type, str):
            raise _Unverified("event without a type")
        data = event.get("data")
        charge = data.get("charge") if isinstance(data, dict) else None
        return Verified(
            headers["webhook-id"], event_type, charge if isinstance(charge, str) else None
        )

    # --- processing ------------------------------------------------------------------------------
    async def process_due(self, limit: int = 100) -> int:
        """Process up to `limit` due rows; returns how many were processed (not retried)."""
        now = self.clock.now()
        until = now + self.lease
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            free = or_(_w.c.locked_until.is_(None), _w.c.locked_until < now)
            due = (
                select(_w.c.id)
                .where(_PENDING, _w.c.next_attempt_at <= now, free)
                .order_by(_w.c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list((await conn.execute(due)).scalars())
            if ids:
                # Conditional, so a row another worker leased meanwhile is not taken twice.
                await conn.execute(
                    update(_w).where(_w.c.id.in_(ids), _PENDING, free).values(locked_until=until)
                )
                rows = (
                    await conn.execute(
                        select(_w)
                        .where(_w.c.id.in_(ids), _w.c.locked_until == until)
                        .order_by(_w.c.next_attempt_at, _w.c.id)
                    )
                ).all()
            else:
                rows = []
            await tx.commit()
        # One re-read serves every trigger leased together for the same charge: each row is
        # still recorded as processed on its own, but the gateway is asked once.
        errors: dict[tuple[str, str, str], str | None] = {}
        for row in rows:
            key = (row.merchant_id, row.account_id, row.subject)
            if row.subject is not None and key not in errors:
                errors[key] = await self._sync(row)
        now = self.clock.now()
        done = 0
        async with self.uow.transaction() as tx:
            for row in rows:
                error = (
                    None
                    if row.subject is None
                    else errors[(row.merchant_id, row.account_id, row.subject)]
                )
                done += error is None
                # Only while the lease is still ours: a worker that overran it must not undo
                # the outcome of the one that took over.
                await tx.repo.conn.execute(
                    update(_w)
                    .where(_w.c.id == row.id, _w.c.locked_until == until)
                    .values(self._outcome(row.attempt_count + 1, error, now))
                )
            await tx.commit()
        return done

    async def _sync(self, row: Row[Any]) -> str | None:
        """Bring the intent in line with the gateway (or the bank account with its provider);
        None when done, else why not (yet)."""
        if row.provider == "plaid":
            assert self.banks is not None, "plaid rows are stored only with banks wired"
            return await self.banks.apply_plaid_webhook(row.account_id, row.payload)
        try:
            pi = await self.payments.sync_with_gateway(row.merchant_id, row.account_id, row.subject)
        except Exception as exc:  # retried: a gateway outage must not lose the event
            log.warning("inbound webhook failed", webhook=row.id, error=type(exc).__name__)
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        return "no payment intent has this reference yet" if pi is None else None

    def _outcome(self, attempts: int, error: str | None, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {"attempt_count": attempts, "locked_until": None}
        if error is None:
            return values | {"status": "processed", "processed_at": now, "last_error": None}
        if attempts >= self.max_attempts:
            return values | {"status": "failed", "next_attempt_at": None, "last_error": error}
        return values | {"next_attempt_at": now + self._backoff(attempts), "last_error": error}

    def _backoff(self, attempts: int) -> timedelta:
        """first_delay doubling per attempt, capped, then jittered down by up to half so a burst
        of failures does not retry in lockstep: after attempt n the wait is within
        [d/2, d] for d = min(max_delay, first_delay * 2**(n-1))."""
        ceiling = min(self.max_delay, self.first_delay * (1 << min(attempts - 1, 30)))
        return ceiling * self.rng.uniform(0.5, 1.0)

    # --- operators -------------------------------------------------------------------------------
    async def list_failed(self, limit: int = 100) -> list[StoredWebhook]:
        async with self.uow.reading() as repo:
            rows = (
                await repo.conn.execute(
                    select(_w)
                    .where(_w.c.status == "failed")
                    .order_by(_w.c.received_at, _w.c.id)
                    .limit(limit)
                )
            ).all()
        return [_stored(r) for r in rows]

    async def get(self, webhook_id: str) -> StoredWebhook | None:
        async with self.uow.reading() as repo:
            row = (await repo.conn.execute(select(_w).where(_w.c.id == webhook_id))).first()
        return _stored(row) if row is not None else None

    async def replay(self, ids: Sequence[str] = (), *, all_failed: bool = False) -> int:
        """Put failed rows back in the queue, due now with a fresh schedule; returns how many.
        Rows that are not failed are left alone (a processed event is not applied twice)."""
        if not ids and not all_failed:
            return 0
        which = _w.c.status == "failed"
        if not all_failed:
            which = and_(which, _w.c.id.in_(list(ids)))
        async with self.uow.transaction() as tx:
            result = await tx.repo.conn.execute(
                update(_w)
                .where(which)
                .values(
                    status="pending",
                    attempt_count=0,
                    next_attempt_at=self.clock.now(),
                    locked_until=None,
                )
            )
            await tx.commit()
        return int(result.rowcount)


def _plaid_type(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('webhook_type', '?')}.{doc.get('webhook_code', '?')}"[:128]


async def _insert_or_ignore(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Insert unless (provider, account, event id) is there already; True when inserted."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(_w)
        .values(values)
        .on_conflict_do_nothing(index_elements=[_w.c.provider, _w.c.account_id, _w.c.event_id])
    )
    result = await conn.execute(stmt)
    return bool(result.rowcount == 1)


__all__ = ["InboundWebhooks", "Received", "StoredWebhook", "Verified"]
