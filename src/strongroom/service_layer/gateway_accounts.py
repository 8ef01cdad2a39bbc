"""A merchant's own accounts at Stripe, Braintree or the sandbox, and its routing rules.

Credentials are checked, then sealed with the keyring (bound to their row, so a sealed value
copied to another row or merchant does not open) before the transaction that stores them; they
are opened only to build a gateway client and never leave through the API. Adding, removing
and re-routing are security changes: each is audited, never with a secret in it.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Row, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Binding, Envelope
from strongroom.domain.audit import AuditTag
from strongroom.domain.clock import Clock
from strongroom.domain.errors import InvalidRequest, ResourceMissing
from strongroom.domain.ids import new_id
from strongroom.domain.routing import Routing, parse_routing, routing_from_json
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

log = structlog.get_logger(__name__)
OPENED_CACHE_LIMIT = 1024  # accounts whose opened credentials a process keeps

_g = t.gateway_accounts
_r = t.gateway_routing


class Provider(StrEnum):
    STRIPE = "stripe"
    BRAINTREE = "braintree"
    SANDBOX = "sandbox"


@dataclass(frozen=True)
class GatewayAccount:
    id: str
    merchant_id: str
    livemode: bool
    provider: Provider
    publishable_key: str | None
    created_at: datetime
    updated_at: datetime

    def webhook_url(self, public_url: str) -> str:
        """Where this account's gateway is told to send its webhooks."""
        return f"{public_url.rstrip('/')}/v1/webhooks/{self.provider.value}/{self.id}"


@dataclass(frozen=True)
class Created:
    account: GatewayAccount
    # The sandbox's webhook signing secret, made here and shown once; None for the others,
    # whose secrets the merchant brings.
    webhook_secret: str | None


@dataclass(frozen=True)
class Credentials:
    account: GatewayAccount
    fields: Mapping[str, Any]


def check_credentials(
    provider: Provider, raw: Mapping[str, Any], *, livemode: bool, allow_base_url: bool
) -> dict[str, Any]:
    """The provider's credential fields, checked; unknown fields are refused so a typo is not
    silently dropped. `base_url` (a local stand-in's address) is for development only."""
    allowed = _FIELDS[provider]
    unknown = set(raw) - allowed - {"base_url"}
    if unknown:
        raise InvalidRequest(
            f"Unknown credential field for {provider}: {sorted(unknown)[0][:40]}.",
            param="credentials",
        )
    fields = dict(raw)
    if "base_url" in fields:
        if not allow_base_url:
            raise InvalidRequest(
                "credentials.base_url is a development setting; it is refused in production.",
                param="credentials.base_url",
            )
        _string(fields, "base_url", prefixes=("http://", "https://"))
    mode = "live" if livemode else "test"
    match provider:
        case Provider.STRIPE:
            _string(fields, "secret_key", prefixes=(f"sk_{mode}_", f"rk_{mode}_"))
            if "publishable_key" in fields:
                _string(fields, "publishable_key", prefixes=(f"pk_{mode}_",))
            hooks = fields.get("webhook_secrets", [])
            if not isinstance(hooks, list) or len(hooks) > 4:
                raise InvalidRequest(
                    "webhook_secrets is a list of at most 4 whsec_ secrets (old and new during "
                    "a rotation).",
                    param="credentials.webhook_secrets",
                )
            for i, secret in enumerate(hooks):
                _check(secret, f"webhook_secrets[{i}]", ("whsec_",))
        case Provider.BRAINTREE:
            for name in ("merchant_id", "public_key", "private_key"):
                _string(fields, name)
            environment = fields.setdefault("environment", "production" if livemode else "sandbox")
            if environment != ("production" if livemode else "sandbox"):
                raise InvalidRequest(
                    f"A {mode} mode account uses Braintree's "
                    f"{'production' if livemode else 'sandbox'} environment.",
                    param="credentials.environment",
                )
            accounts = fields.get("merchant_accounts", {})
            if not isinstance(accounts, dict) or not all(
                isinstance(k, str) and len(k) == 3 and isinstance(v, str)
                for k, v in accounts.items()
            ):
                raise InvalidRequest(
                    "merchant_accounts maps a currency code to a Braintree merchant account id.",
                    param="credentials.merchant_accounts",
                )
            if "tokenization_key" in fields:
                _string(fields, "tokenization_key")
        case Provider.SANDBOX:
            if livemode:
                raise InvalidRequest("The sandbox takes test payments only.", param="provider")
    return fields


_FIELDS: dict[Provider, set[str]] = {
    Provider.STRIPE: {"secret_key", "publishable_key", "webhook_secrets"},
    Provider.BRAINTREE: {
        "merchant_id",
        "public_key",
        "private_key",
        "environment",
        "merchant_accounts",
        "tokenization_key",
    },
    Provider.SANDBOX: set(),
}


def _string(fields: Mapping[str, Any], name: str, prefixes: tuple[str, ...] = ()) -> None:
    if name not in fields:
        raise InvalidRequest(f"Missing credential: {name}.", param=f"credentials.{name}")
    _check(fields[name], name, prefixes)


def _check(value: Any, name: str, prefixes: tuple[str, ...]) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 512 or not value.isprintable():
        raise InvalidRequest(f"{name} must be a short string.", param=f"credentials.{name}")
    if prefixes and not value.startswith(prefixes):
        # The value is never echoed: it is a secret, and may be someone else's.
        raise InvalidRequest(
            f"{name} must start with {' or '.join(prefixes)}.", param=f"credentials.{name}"
        )


def _binding(account_id: str, merchant_id: str) -> Binding:
    return Binding.for_row(_g, "credentials", account_id, merchant_id)


def _account(row: Row[Any]) -> GatewayAccount:
    return GatewayAccount(
        id=row.id,
        merchant_id=row.merchant_id,
        livemode=row.livemode,
        provider=Provider(row.provider),
        publishable_key=row.publishable_key,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _missing(account_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such gateway_account: '{account_id[:40]}'", param="id")


class GatewayAccounts:
    def __init__(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        clock: Clock,
        *,
        audit: AuditLog,
        allow_base_url: bool,
    ) -> None:
        self.uow = uow
        self.envelope = envelope
        self.clock = clock
        self.audit = audit
        self.allow_base_url = allow_base_url
        # Opened credentials by (account, sealed text): every gateway webhook needs its
        # account's secret, and opening it is a KMS call. The row is still read each time, so a
        # deleted account stops at once and a re-sealed one (key rotation) is opened afresh.
        self._opened_cache: dict[tuple[str, str], Mapping[str, Any]] = {}

    async def create(
        self, caller: Caller, provider: str, credentials: Mapping[str, Any]
    ) -> Created:
        try:
            kind = Provider(provider)
        except ValueError:
            raise InvalidRequest(
                "provider must be one of: stripe, braintree, sandbox.", param="provider"
            ) from None
        fields = check_credentials(
            kind, credentials, livemode=caller.livemode, allow_base_url=self.allow_base_url
        )
        webhook_secret = None
        if kind is Provider.SANDBOX:
            # Standard Webhooks' secret format: whsec_ and base64 of at least 24 random bytes.
            webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            fields["webhook_secret"] = webhook_secret
        publishable = fields.get("publishable_key") or fields.get("tokenization_key")
        now = self.clock.now()
        account = GatewayAccount(
            id=new_id("ga"),
            merchant_id=caller.merchant_id,
            livemode=caller.livemode,
            provider=kind,
            publishable_key=publishable,
            created_at=now,
            updated_at=now,
        )
        # Sealed before the transaction: a KMS call is network I/O, not to be held in one.
        sealed = await self.envelope.seal(
            json.dumps(fields).encode(), _binding(account.id, caller.merchant_id)
        )
        async with self.uow.transaction() as tx:
            await tx.repo.conn.execute(
                _g.insert().values(
                    id=account.id,
                    merchant_id=account.merchant_id,
                    livemode=account.livemode,
                    provider=account.provider.value,
                    credentials=sealed,
                    publishable_key=account.publishable_key,
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
            )
            await self._audit(
                tx, caller, AuditTag.GATEWAY_ACCOUNT_CREATE, account.id, {"provider": kind.value}
            )
            await tx.commit()
        log.info("gateway account added", account=account.id, provider=kind.value)
        return Created(account, webhook_secret)

    async def get(self, caller: Caller, account_id: str) -> GatewayAccount:
        async with self.uow.reading() as repo:
            row = await self._row(repo.conn, caller.merchant_id, caller.livemode, account_id)
        if row is None:
            raise _missing(account_id)
        return _account(row)

    async def list(self, caller: Caller) -> list[GatewayAccount]:
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(_g)
                .where(
                    _g.c.merchant_id == caller.merchant_id,
                    _g.c.livemode == caller.livemode,
                    _g.c.status == "active",
                )
                .order_by(_g.c.created_at, _g.c.id)
            )
            return [_account(r) for r in rows]

    async def delete(self, caller: Caller, account_id: str) -> None:
        """The account stops taking payments; payments made through it keep their reference,
        and its credentials stay sealed for refunds of those payments."""
        async with self.uow.transaction() as tx:
            routing = await self._routing(tx.repo.conn, caller.merchant_id, caller.livemode)
            if account_id in routing.accounts():
                raise InvalidRequest(
                    "This gateway_account is named in the routing rules; change them first.",
                    param="id",
                )
            done = await tx.repo.conn.execute(
                update(_g)
                .where(
                    _g.c.id == account_id,
                    _g.c.merchant_id == caller.merchant_id,
                    _g.c.livemode == caller.livemode,
                    _g.c.status == "active",
                )
                .values(status="deleted", updated_at=self.clock.now())
            )
            if not done.rowcount:
                raise _missing(account_id)
            await self._audit(tx, caller, AuditTag.GATEWAY_ACCOUNT_DELETE, account_id)
            await tx.commit()

    async def credentials(self, merchant_id: str, account_id: str) -> Credentials:
        """The account's opened credentials, for building its client (never for a response).
        Deleted accounts still open: their payments may be captured or refunded."""
        opened = await self._opened(_g.c.id == account_id, _g.c.merchant_id == merchant_id)
        if opened is None:
            raise _missing(account_id)
        return opened

    async def providers(self, merchant_id: str, account_ids: Sequence[str]) -> dict[str, str]:
        """Account id → provider, for the merchant's accounts among these (deleted ones too:
        routing never names one, see `delete`)."""
        async with self.uow.reading() as repo:
            rows = await repo.conn.execute(
                select(_g.c.id, _g.c.provider).where(
                    _g.c.merchant_id == merchant_id, _g.c.id.in_(list(account_ids))
                )
            )
            return {r.id: r.provider for r in rows}

    async def account_for_webhook(self, provider: str, account_id: str) -> Credentials | None:
        """An inbound webhook's endpoint: the account its URL names, if it is of that provider."""
        return await self._opened(_g.c.id == account_id, _g.c.provider == provider)

    # --- routing ---------------------------------------------------------------------------------
    async def get_routing(self, caller: Caller) -> Routing:
        return await self.routing_for(caller.merchant_id, caller.livemode)

    async def routing_for(self, merchant_id: str, livemode: bool) -> Routing:
        async with self.uow.reading() as repo:
            return await self._routing(repo.conn, merchant_id, livemode)

    async def set_routing(self, caller: Caller, doc: Mapping[str, Any]) -> Routing:
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            conn = tx.repo.conn
            active = await conn.execute(
                select(_g.c.id).where(
                    _g.c.merchant_id == caller.merchant_id,
                    _g.c.livemode == caller.livemode,
                    _g.c.status == "active",
                )
            )
            routing = parse_routing(doc, {r.id for r in active})
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            values = {"rules": routing.to_json(), "updated_at": now}
            await conn.execute(
                insert(_r)
                .values(merchant_id=caller.merchant_id, livemode=caller.livemode, **values)
                .on_conflict_do_update(index_elements=["merchant_id", "livemode"], set_=values)
            )
            await self._audit(
                tx,
                caller,
                AuditTag.GATEWAY_ROUTING_UPDATE,
                caller.merchant_id,
                {"rules": len(routing.rules), "default": list(routing.default)},
                resource="gateway_routing",
            )
            await tx.commit()
        return routing

    # --- internals -------------------------------------------------------------------------------
    @staticmethod
    async def _row(
        conn: AsyncConnection, merchant_id: str, livemode: bool, account_id: str
    ) -> Row[Any] | None:
        return (
            await conn.execute(
                select(_g).where(
                    _g.c.id == account_id,
                    _g.c.merchant_id == merchant_id,
                    _g.c.livemode == livemode,
                    _g.c.status == "active",
                )
            )
        ).first()

    async def _opened(self, *where: ColumnElement[bool]) -> Credentials | None:
        async with self.uow.reading() as repo:
            row = (await repo.conn.execute(select(_g).where(*where))).first()
        if row is None:
            return None
        key = (row.id, row.credentials)
        fields = self._opened_cache.get(key)
        if fields is None:
            opened = await self.envelope.open(row.credentials, _binding(row.id, row.merchant_id))
            fields = MappingProxyType(json.loads(opened))
            if len(self._opened_cache) >= OPENED_CACHE_LIMIT:
                self._opened_cache.clear()
            self._opened_cache[key] = fields
        return Credentials(_account(row), fields)

    @staticmethod
    async def _routing(conn: AsyncConnection, merchant_id: str, livemode: bool) -> Routing:
        row = (
            await conn.execute(
                select(_r.c.rules).where(_r.c.merchant_id == merchant_id, _r.c.livemode == livemode)
            )
        ).first()
        return Routing() if row is None else routing_from_json(row.rules)

    async def _audit(
        self,
        tx: Transaction,
        caller: Caller,
        tag: AuditTag,
        resource_id: str,
        details: dict[str, object] | None = None,
        *,
        resource: str = "gateway_account",
    ) -> None:
        event = self.audit.by_caller(caller, tag, resource=(resource, resource_id), details=details)
        await tx.repo.add_audit_event(event)
