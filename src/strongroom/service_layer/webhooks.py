"""Signed merchant webhooks: endpoints and their secrets, the fan-out of events into deliveries,
and the delivery loop every worker runs.

How an event reaches a merchant:

  fan-out   `handle(events)` (a durable consumer of the event stream) inserts one delivery per
            enabled endpoint of the event's merchant and mode whose filter takes it, with the
            Stripe-shaped body frozen, due now. Insert-or-ignore on (endpoint, event), so an
            event the stream hands over twice creates nothing new.
  lease     `deliver_due()` takes due deliveries under a lease (`locked_until`), committed
            before anything is sent: FOR UPDATE SKIP LOCKED on PostgreSQL, SQLite's write lock
            otherwise, so two workers never take the same delivery.
  send      outside any transaction, through the SSRF-safe client, signed per Standard Webhooks
            with every active secret (one signature each while a rotation's grace runs).
            `webhook-id` is the event id: the same on every retry and replay, so receivers
            deduplicate on it.
  record    a new transaction: the attempt row, then the delivery's next state from the retry
            schedule (strongroom.domain.webhooks), disabling the endpoint on 410 Gone or after a
            whole schedule of nothing but failures, which emits `webhook_endpoint.disabled`.

A worker that dies mid-send leaves a lease that expires; the delivery is sent again (at least
once, with the same webhook-id).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import structlog
from standardwebhooks.webhooks import Webhook

from strongroom import __version__
from strongroom.adapters.db import tables as t
from strongroom.adapters.db import webhook_store as store
from strongroom.adapters.http.safe_client import (
    DeliveryError,
    Response,
    SafeClient,
    TargetRefused,
    check_url,
    classify_address,
)
from strongroom.adapters.kms.envelope import Binding, Envelope
from strongroom.adapters.kms.port import DecryptionFailed
from strongroom.adapters.kms.sealed import SealedValue
from strongroom.domain.audit import AuditTag
from strongroom.domain.clock import Clock
from strongroom.domain.errors import IllegalTransition, InvalidRequest, ResourceMissing
from strongroom.domain.events import Event, EventType
from strongroom.domain.ids import new_id
from strongroom.domain.webhooks import (
    GONE,
    ROTATION_GRACE,
    Attempt,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    EndpointStatus,
    WebhookEndpoint,
    after_attempt,
    endpoint_data,
    failing_throughout,
    new_secret,
    parse_enabled_events,
    parse_retry_after,
    redirect_reason,
)
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

log = structlog.get_logger(__name__)

USER_AGENT = f"Strongroom-Webhooks/{__version__}"
EXCERPT_BYTES = 1024  # of a receiver's response body, kept with the attempt
MAX_ERROR = 500  # characters of an attempt's error reason (the column's size)
Observer = Callable[[str], None]


@dataclass(frozen=True)
class CreateWebhookEndpoint:
    url: str
    enabled_events: list[str]
    description: str | None = None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class UpdateWebhookEndpoint:
    """Only the fields given change; `disabled` False re-enables, True disables."""

    url: str | None = None
    enabled_events: list[str] | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None
    disabled: bool | None = None


@dataclass(frozen=True)
class WithSecret:
    """An endpoint with its signing secret in clear: only ever the answer to the request that
    created the secret (create, rotate_secret)."""

    endpoint: WebhookEndpoint
    secret: str


def signature_headers(
    msg_id: str, timestamp: datetime, payload: str, secrets: Sequence[str]
) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt, one `v1,` signature per secret."""
    signatures = " ".join(Webhook(s).sign(msg_id, timestamp, payload) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(timestamp.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _no_observer(outcome: str) -> None:
    return None


class Webhooks:
    """The merchant webhook service. `observe` is told each attempt's outcome (one word:
    succeeded, failed, redirected, gone, refused, error), for metrics."""

    def __init__(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        client: SafeClient,
        clock: Clock,
        *,
        allow_loopback: bool = False,
        lease: timedelta = timedelta(seconds=60),
        concurrency: int = 16,
        rng: random.Random | None = None,
        observe: Observer = _no_observer,
        audit: AuditLog,
    ) -> None:
        self.uow = uow
        self.audit = audit
        self.envelope = envelope
        self.client = client
        self.clock = clock
        self.allow_loopback = allow_loopback
        self.lease = lease
        self.concurrency = concurrency
        # Jitter only spreads retries out; it needs no cryptographic randomness.
        self.rng = rng or random.Random()  # noqa: S311
        self.observe = observe

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- endpoints -------------------------------------------------------------------------------
    async def create_endpoint(self, caller: Caller, cmd: CreateWebhookEndpoint) -> WithSecret:
        """Raises InvalidRequest for a URL that can never be delivered to or an unknown event
        type; nothing is written then."""
        url = self._checked_url(cmd.url, livemode=caller.livemode)
        events = parse_enabled_events(cmd.enabled_events)
        now = self.clock.now()
        endpoint = WebhookEndpoint(
            id=new_id("we"),
            merchant_id=caller.merchant_id,
            livemode=caller.livemode,
            url=url,
            enabled_events=events,
            description=cmd.description,
            metadata=dict(cmd.metadata or {}),
            status=EndpointStatus.ENABLED,
            disabled_reason=None,
            created_at=now,
            updated_at=now,
        )
        # Sealed before the transaction: a KMS call is network I/O, not to be held in one.
        secret, secret_id, sealed = await self._new_sealed_secret(caller.merchant_id)
        async with self.uow.transaction() as tx:
            await store.add_endpoint(tx.repo.conn, endpoint)
            await store.add_secret(
                tx.repo.conn,
                secret_id=secret_id,
                endpoint_id=endpoint.id,
                merchant_id=caller.merchant_id,
                sealed=sealed,
                now=now,
            )
            await self._audit(
                tx, caller, AuditTag.WEBHOOK_ENDPOINT_CREATE, endpoint.id, {"url": endpoint.url}
            )
            await tx.commit()
        log.info("webhook endpoint created", endpoint=endpoint.id, merchant=caller.merchant_id)
        return WithSecret(endpoint, secret)

    async def get_endpoint(self, caller: Caller, endpoint_id: str) -> WebhookEndpoint:
        async with self.uow.reading() as repo:
            endpoint = await store.get_endpoint(
                repo.conn, caller.merchant_id, caller.livemode, endpoint_id
            )
        if endpoint is None:
            raise _missing_endpoint(endpoint_id)
        return endpoint

    async def list_endpoints(
        self, caller: Caller, *, limit: int, starting_after: str | None
    ) -> tuple[list[WebhookEndpoint], bool]:
        async with self.uow.reading() as repo:
            page = await store.list_endpoints(
                repo.conn,
                caller.merchant_id,
                caller.livemode,
                limit=limit,
                starting_after=starting_after,
            )
        if page is None:
            raise ResourceMissing(
                f"No such webhook_endpoint: '{starting_after}'", param="starting_after"
            )
        return page

    async def update_endpoint(
        self, caller: Caller, endpoint_id: str, cmd: UpdateWebhookEndpoint
    ) -> WebhookEndpoint:
        url = self._checked_url(cmd.url, livemode=caller.livemode) if cmd.url is not None else None
        events = (
            parse_enabled_events(cmd.enabled_events) if cmd.enabled_events is not None else None
        )
        async with self.uow.transaction() as tx:
            endpoint = await self._locked_endpoint(tx, caller, endpoint_id)
            if url is not None:
                endpoint.url = url
            if events is not None:
                endpoint.enabled_events = events
            if cmd.description is not None:
                endpoint.description = cmd.description
            if cmd.metadata is not None:
                endpoint.metadata = dict(cmd.metadata)
            if cmd.disabled is True and endpoint.enabled:
                endpoint.status = EndpointStatus.DISABLED
                endpoint.disabled_reason = DisabledReason.REQUESTED
            elif cmd.disabled is False:
                # Deliveries left waiting resume, each continuing its own schedule.
                endpoint.status = EndpointStatus.ENABLED
                endpoint.disabled_reason = None
            endpoint.updated_at = self.clock.now()
            await store.save_endpoint(tx.repo.conn, endpoint)
            await self._audit(
                tx,
                caller,
                AuditTag.WEBHOOK_ENDPOINT_UPDATE,
                endpoint.id,
                {"url": endpoint.url, "status": str(endpoint.status)},
            )
            await tx.commit()
        return endpoint

    async def delete_endpoint(self, caller: Caller, endpoint_id: str) -> str:
        """Deletes the endpoint with its secrets, deliveries and attempts; returns its id."""
        async with self.uow.transaction() as tx:
            # Not row-locked first: deleting takes the deliveries' locks before the endpoint's,
            # the order a worker recording an attempt takes them in.
            endpoint = await store.get_endpoint(
                tx.repo.conn, caller.merchant_id, caller.livemode, endpoint_id
            )
            if endpoint is None:
                raise _missing_endpoint(endpoint_id)
            await store.delete_endpoint(tx.repo.conn, endpoint_id)
            await self._audit(tx, caller, AuditTag.WEBHOOK_ENDPOINT_DELETE, endpoint_id)
            await tx.commit()
        log.info("webhook endpoint deleted", endpoint=endpoint_id, merchant=caller.merchant_id)
        return endpoint_id

    async def rotate_secret(
        self, caller: Caller, endpoint_id: str, expires_in: timedelta | None = None
    ) -> WithSecret:
        """A new signing secret; the ones active now keep signing for `expires_in` (default and
        most 24 h; 0 retires them at once), so receivers can switch without losing a delivery."""
        grace = ROTATION_GRACE if expires_in is None else expires_in
        if not timedelta(0) <= grace <= ROTATION_GRACE:
            raise InvalidRequest(
                "expires_in is in seconds, from 0 to 86400 (24 hours).", param="expires_in"
            )
        secret, secret_id, sealed = await self._new_sealed_secret(caller.merchant_id)
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            endpoint = await self._locked_endpoint(tx, caller, endpoint_id)
            await store.retire_secrets(tx.repo.conn, endpoint.id, until=now + grace, now=now)
            await store.add_secret(
                tx.repo.conn,
                secret_id=secret_id,
                endpoint_id=endpoint.id,
                merchant_id=caller.merchant_id,
                sealed=sealed,
                now=now,
            )
            await self._audit(
                tx,
                caller,
                AuditTag.WEBHOOK_SECRET_ROTATE,
                endpoint.id,
                {"previous_expire_in_seconds": int(grace.total_seconds())},
            )
            await tx.commit()
        log.info("webhook secret rotated", endpoint=endpoint_id, merchant=caller.merchant_id)
        return WithSecret(endpoint, secret)

    async def _audit(
        self,
        tx: Transaction,
        caller: Caller,
        tag: AuditTag,
        endpoint_id: str,
        details: dict[str, object] | None = None,
    ) -> None:
        """Where events go and who can sign them are security settings: each change is audited
        in its own transaction, never with a secret."""
        event = self.audit.by_caller(
            caller, tag, resource=("webhook_endpoint", endpoint_id), details=details
        )
        await tx.repo.add_audit_event(event)

    # --- deliveries (API) ------------------------------------------------------------------------
    async def list_deliveries(
        self, caller: Caller, endpoint_id: str, *, limit: int, starting_after: str | None
    ) -> tuple[list[Delivery], bool]:
        """The endpoint's deliveries, newest first, each with its attempts."""
        async with self.uow.reading() as repo:
            endpoint = await store.get_endpoint(
                repo.conn, caller.merchant_id, caller.livemode, endpoint_id
            )
            if endpoint is None:
                raise _missing_endpoint(endpoint_id)
            page = await store.list_deliveries(
                repo.conn, endpoint_id, limit=limit, starting_after=starting_after
            )
        if page is None:
            raise ResourceMissing(
                f"No such webhook_delivery: '{starting_after}'", param="starting_after"
            )
        return page

    async def get_delivery(self, caller: Caller, delivery_id: str) -> Delivery:
        async with self.uow.reading() as repo:
            delivery = await store.get_delivery(
                repo.conn, caller.merchant_id, caller.livemode, delivery_id
            )
        if delivery is None:
            raise _missing_delivery(delivery_id)
        return delivery

    async def replay(self, caller: Caller, delivery_id: str) -> Delivery:
        """Send the delivery again soon (the next worker pass), with the same webhook-id, as a
        new run of the retry schedule. Raises IllegalTransition (409) while its endpoint is
        disabled: re-enable it first."""
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            delivery = await store.get_delivery(
                conn, caller.merchant_id, caller.livemode, delivery_id
            )
            if delivery is None:
                raise _missing_delivery(delivery_id)
            endpoint = await store.get_endpoint(
                conn, caller.merchant_id, caller.livemode, delivery.endpoint_id
            )
            if endpoint is None or not endpoint.enabled:
                raise IllegalTransition(
                    "This delivery's webhook endpoint is disabled; re-enable it to replay.",
                    status=str(EndpointStatus.DISABLED),
                    code="webhook_endpoint_disabled",
                )
            # The lease is left alone: an attempt in flight finishes and counts for the new run.
            await store.update_delivery(
                conn,
                delivery_id,
                status=DeliveryStatus.PENDING,
                step=0,
                started_at=None,
                next_attempt_at=now,
            )
            await tx.commit()
        return replace(
            delivery, status=DeliveryStatus.PENDING, step=0, started_at=None, next_attempt_at=now
        )

    # --- fan-out (event stream consumer) ---------------------------------------------------------
    async def handle(self, events: Sequence[Event]) -> None:
        """One delivery per enabled endpoint of an event's merchant and mode that takes the
        event, due now; a batch in one transaction. Idempotent: deliveries are keyed by
        (endpoint, event)."""
        scopes = {(event.merchant_id, event.livemode) for event in events}
        async with self.uow.reading() as repo:
            # Read first, outside the write lock: most events of most merchants go nowhere.
            endpoints = {
                scope: await store.enabled_endpoints(repo.conn, *scope) for scope in scopes
            }
        now = self.clock.now()
        rows = [
            row
            for event in events
            for row in self._deliveries(event, endpoints[event.merchant_id, event.livemode], now)
        ]
        if not rows:
            return
        async with self.uow.transaction() as tx:
            await store.add_deliveries(tx.repo.conn, rows)
            await tx.commit()

    @staticmethod
    def _deliveries(
        event: Event, endpoints: Sequence[WebhookEndpoint], now: datetime
    ) -> list[dict[str, Any]]:
        aggregate = (event.aggregate_type, event.aggregate_id)
        targets = [
            ep
            for ep in endpoints
            # An endpoint receives what happened after it was made, not the history before.
            if ep.takes(event.type, aggregate) and ep.created_at <= event.created_at
        ]
        if not targets:
            return []
        payload = json.dumps(event.merchant_payload(), separators=(",", ":"), ensure_ascii=False)
        return [
            {
                "id": new_id("whd"),
                "endpoint_id": ep.id,
                "merchant_id": event.merchant_id,
                "livemode": event.livemode,
                "event_id": event.id,
                "event_type": event.type,
                "payload": payload,
                "status": DeliveryStatus.PENDING,
                "step": 0,
                "attempt_count": 0,
                "next_attempt_at": now,
                "locked_until": None,
                "started_at": None,
                "delivered_at": None,
                "created_at": now,
            }
            for ep in targets
        ]

    # --- delivery loop (every worker) ------------------------------------------------------------
    async def deliver_due(self, limit: int) -> int:
        """Send up to `limit` due deliveries, `concurrency` at a time, each batch under its own
        lease; returns how many attempts were made."""
        sent = 0
        while sent < limit:
            batch = min(self.concurrency, limit - sent)
            now = self.clock.now()
            async with self.uow.transaction() as tx:
                leased = await store.lease_due(tx.repo.conn, now, now + self.lease, batch)
                await tx.commit()
            if not leased:
                break
            secrets = await self._signing_secrets({d.endpoint_id for d in leased}, now)
            await asyncio.gather(
                *(self._deliver(d, secrets.get(d.endpoint_id, [])) for d in leased)
            )
            sent += len(leased)
            if len(leased) < batch:
                break
        return sent

    async def _deliver(self, leased: store.Leased, secrets: list[str]) -> None:
        """Send once and record the attempt. Never raises: a failure to record is logged and
        the lease's expiry brings the delivery round again."""
        try:
            attempt, retry_after, outcome = await self._send(leased, secrets)
            await self._record(leased, attempt, retry_after)
            self.observe(outcome)
        except Exception:
            log.exception("webhook delivery not recorded", delivery=leased.id)

    async def _send(
        self, leased: store.Leased, secrets: list[str]
    ) -> tuple[Attempt, timedelta | None, str]:
        attempted_at = self.clock.now()
        if not secrets:  # an endpoint always has a current secret; never send unsigned
            return (
                Attempt(attempted_at, None, "no signing secret could be opened", 0, None),
                None,
                "error",
            )
        headers = signature_headers(leased.event_id, attempted_at, leased.payload, secrets)
        started = time.perf_counter()  # a duration, so real time, whatever the clock says
        response: Response | None = None
        error: str | None = None
        try:
            response = await self.client.post(leased.url, leased.payload.encode(), headers)
        except TargetRefused as exc:
            error, outcome = exc.reason, "refused"
        except DeliveryError as exc:
            error, outcome = exc.reason, "error"
        except Exception as exc:
            log.exception("webhook send failed unexpectedly", delivery=leased.id)
            error, outcome = f"delivery failed ({type(exc).__name__})", "error"
        duration_ms = round((time.perf_counter() - started) * 1000)
        if response is None:
            return Attempt(attempted_at, None, _clean(error), duration_ms, None), None, outcome
        status = response.status
        outcome = "failed"
        excerpt = _clean(response.body[:EXCERPT_BYTES].decode("utf-8", "replace"), EXCERPT_BYTES)
        if 300 <= status < 400:
            error, outcome = redirect_reason(response.headers.get("location")), "redirected"
        elif 200 <= status < 300:
            outcome = "succeeded"
        elif status == GONE:
            outcome = "gone"
        retry_after = parse_retry_after(response.headers.get("retry-after"), attempted_at)
        attempt = Attempt(attempted_at, status, _clean(error), duration_ms, excerpt)
        return attempt, retry_after, outcome

    async def _record(
        self, leased: store.Leased, attempt: Attempt, retry_after: timedelta | None
    ) -> None:
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            row = await store.delivery_for_update(conn, leased.id)
            if row is None:  # its endpoint was deleted while we were sending
                return
            await store.add_attempt(conn, leased.id, attempt)
            if row.locked_until != leased.locked_until:
                # Our lease ran out and another worker holds the delivery now: the attempt
                # happened and is recorded, but the schedule is theirs to move.
                await store.update_delivery(conn, leased.id, attempt_count=row.attempt_count + 1)
                await tx.commit()
                return
            step = row.step + 1
            started_at = row.started_at or attempt.attempted_at
            after = after_attempt(step, attempt, retry_after=retry_after, rng=self.rng)
            await store.update_delivery(
                conn,
                leased.id,
                status=after.status,
                step=after.step,
                attempt_count=row.attempt_count + 1,
                next_attempt_at=after.next_attempt_at,
                locked_until=None,
                started_at=started_at,
                **({"delivered_at": attempt.attempted_at} if attempt.succeeded else {}),
            )
            if after.disable is not None:
                await self._disable(tx, leased.endpoint_id, after.disable)
            elif after.exhausted and failing_throughout(
                started_at, await store.last_success(conn, leased.endpoint_id)
            ):
                await self._disable(tx, leased.endpoint_id, DisabledReason.FAILING)
            await tx.commit()

    async def _disable(self, tx: Transaction, endpoint_id: str, reason: DisabledReason) -> None:
        """Disable the endpoint (if still enabled) and tell the merchant with an event about it,
        which fan-out never sends to the endpoint itself."""
        endpoint = await store.endpoint_for_update(tx.repo.conn, endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return
        endpoint.status = EndpointStatus.DISABLED
        endpoint.disabled_reason = reason
        endpoint.updated_at = self.clock.now()
        await store.save_endpoint(tx.repo.conn, endpoint)
        tx.emit(
            EventType.WEBHOOK_ENDPOINT_DISABLED,
            merchant_id=endpoint.merchant_id,
            livemode=endpoint.livemode,
            aggregate=("webhook_endpoint", endpoint.id),
            data=endpoint_data(endpoint),
        )
        log.warning("webhook endpoint disabled", endpoint=endpoint.id, reason=str(reason))

    async def _signing_secrets(self, endpoint_ids: set[str], now: datetime) -> dict[str, list[str]]:
        """Each endpoint's active secrets in clear, opened once per batch. An endpoint whose
        secret will not open (a retired key version) gets none and its attempt says so."""
        async with self.uow.reading() as repo:
            stored = await store.active_secrets(repo.conn, sorted(endpoint_ids), now)
        opened: dict[str, list[str]] = {}
        for endpoint_id, secrets in stored.items():
            try:
                opened[endpoint_id] = [
                    (
                        await self.envelope.open(s.sealed, _secret_binding(s.id, s.merchant_id))
                    ).decode()
                    for s in secrets
                ]
            except DecryptionFailed:
                log.exception("webhook secret does not open", endpoint=endpoint_id)
        return opened

    # --- helpers ---------------------------------------------------------------------------------
    async def _new_sealed_secret(self, merchant_id: str) -> tuple[str, str, SealedValue]:
        secret = new_secret()
        secret_id = new_id("wes")
        sealed = await self.envelope.seal(secret.encode(), _secret_binding(secret_id, merchant_id))
        return secret, secret_id, sealed

    async def _locked_endpoint(
        self, tx: Transaction, caller: Caller, endpoint_id: str
    ) -> WebhookEndpoint:
        endpoint = await store.get_endpoint(
            tx.repo.conn, caller.merchant_id, caller.livemode, endpoint_id, lock=True
        )
        if endpoint is None:
            raise _missing_endpoint(endpoint_id)
        return endpoint

    def _checked_url(self, url: str, *, livemode: bool) -> str:
        """The normalized URL, or InvalidRequest (param url) saying why it can never be
        delivered to. Names are not resolved here (their addresses are checked on every
        delivery); IP literals and localhost names are judged now."""
        try:
            normalized = check_url(url)
        except TargetRefused as exc:
            raise InvalidRequest(
                f"Invalid url: {exc.reason}.", param="url", code="url_invalid"
            ) from None
        parts = urlsplit(normalized)
        host = (parts.hostname or "").rstrip(".").lower()
        if livemode and parts.scheme != "https":
            raise InvalidRequest(
                "Live mode webhook endpoints must use https.", param="url", code="url_invalid"
            )
        why: str | None
        try:
            why = classify_address(str(ip_address(host)), allow_loopback=self.allow_loopback)
        except ValueError:  # a name; RFC 6761 reserves localhost and its subdomains for loopback
            local = host == "localhost" or host.endswith(".localhost")
            why = "a loopback address" if local and not self.allow_loopback else None
        if why is not None:
            raise InvalidRequest(
                f"Invalid url: {host} is {why}; webhooks go to public addresses only.",
                param="url",
                code="url_invalid",
            )
        return normalized


def _secret_binding(secret_id: str, merchant_id: str) -> Binding:
    return Binding.for_row(t.webhook_endpoint_secrets, "secret", secret_id, merchant_id)


def _missing_endpoint(endpoint_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such webhook_endpoint: '{endpoint_id}'", param="id")


def _missing_delivery(delivery_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such webhook_delivery: '{delivery_id}'", param="id")


def _clean(text: str | None, limit: int = MAX_ERROR) -> str | None:
    """Text fit for a column on both databases (PostgreSQL refuses NUL), within `limit`."""
    return None if text is None else text.replace("\x00", "\ufffd")[:limit]
