"""Merchants and their API keys. Secret keys are stored only as keyed hashes (HMAC-SHA256 with
the server's secret) and shown once, at creation; afterwards only a short display form is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from limits import parse
from sqlalchemy import update

from strongroom.adapters.db import tables as t
from strongroom.domain.audit import (
    NO_ORIGIN,
    SYSTEM,
    Actor,
    ActorType,
    AuditTag,
    Origin,
    Outcome,
)
from strongroom.domain.clock import Clock
from strongroom.domain.errors import AuthenticationError, InvalidRequest, ResourceMissing
from strongroom.domain.ids import new_id
from strongroom.domain.model import LegalEntity, Merchant
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.unit_of_work import UnitOfWork


class KeyKind(StrEnum):
    SECRET = "secret"  # noqa: S105 - sk_…: the merchant's server
    RESTRICTED = "restricted"  # rk_…: a server, for only what its scopes grant
    PUBLISHABLE = "publishable"  # pk_…: browsers; may only tokenize


_PREFIX = {KeyKind.SECRET: "sk", KeyKind.RESTRICTED: "rk", KeyKind.PUBLISHABLE: "pk"}

RATE_LIMIT_CLASSES = ("reads", "writes")  # what a merchant may set for its own keys


@dataclass(frozen=True)
class IssuedKey:
    """A newly made key. `secret` exists only in this object; it is never stored."""

    id: str
    merchant_id: str
    kind: KeyKind
    livemode: bool
    secret: str
    display: str


@dataclass(frozen=True)
class Authenticated:
    caller: Caller
    kind: KeyKind
    key_id: str
    rate_limits: dict[str, str] | None = None  # the merchant's own, by route class


class Merchants:
    """Merchants and keys. Successful key lookups are cached for `key_cache_ttl` so a request
    does not spend a database round trip on authentication; revoking a key clears it from this
    process's cache at once, and other processes stop accepting it within the TTL."""

    CACHE_LIMIT = 10_000

    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        *,
        hash_secret: bytes,
        key_cache_ttl: timedelta = timedelta(seconds=5),
        audit: AuditLog,
        scopes: frozenset[str] = frozenset(),
    ) -> None:
        self.scopes = scopes  # what a restricted key may be given (the policy's)
        self.uow = uow
        self.audit = audit
        self.clock = clock
        self._hash_secret = hash_secret
        self._key_cache_ttl = key_cache_ttl
        self._key_cache: dict[str, tuple[Authenticated, datetime]] = {}

    def key_hash(self, raw: str) -> str:
        return hmac.new(self._hash_secret, raw.encode(), hashlib.sha256).hexdigest()

    async def create_merchant(
        self, name: str, *, legal_name: str | None = None, country: str = "US"
    ) -> Merchant:
        now = self.clock.now()
        merchant = Merchant(
            id=new_id("acct", 16),
            name=name,
            legal_entity=LegalEntity(new_id("le", 16), legal_name or name, country.upper()),
            created_at=now,
        )
        async with self.uow.transaction() as tx:
            await tx.repo.add_merchant(merchant)
            await tx.commit()
        return merchant

    async def get_merchant(self, merchant_id: str) -> Merchant:
        async with self.uow.reading() as repo:
            merchant = await repo.get_merchant(merchant_id)
        if merchant is None:
            raise ResourceMissing(f"No such merchant: '{merchant_id}'", param="merchant")
        return merchant

    async def find_by_name(self, name: str) -> Merchant | None:
        async with self.uow.reading() as repo:
            return await repo.find_merchant_by_name(name)

    async def refund_step_up_amount(self, merchant_id: str) -> int:
        """Operators' refunds above this (minor units) need a recent second factor."""
        async with self.uow.reading() as repo:
            return await repo.refund_step_up_amount(merchant_id)

    async def set_refund_step_up_amount(
        self, merchant_id: str, amount: int, *, actor: Actor, origin: Origin = NO_ORIGIN
    ) -> None:
        if not 0 <= amount <= 10**12:
            raise InvalidRequest(
                "The threshold must be a whole number of minor units, 0 or more.", param="amount"
            )
        merchants = t.merchants
        async with self.uow.transaction() as tx:
            await tx.repo.conn.execute(
                update(merchants)
                .where(merchants.c.id == merchant_id)
                .values(refund_step_up_amount=amount)
            )
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.MERCHANT_REFUND_STEP_UP_UPDATE,
                    actor=actor,
                    origin=origin,
                    merchant_id=merchant_id,
                    resource=("merchant", merchant_id),
                    details={"amount": amount},
                )
            )
            await tx.commit()

    async def set_rate_limits(
        self, merchant_id: str, limits: Mapping[str, str | None]
    ) -> dict[str, str]:
        """Set (or, with None, clear) the merchant's own limits per route class, e.g.
        {"reads": "50/second"}; the merchant's keys see them within the key cache's TTL."""
        for name, value in limits.items():
            if name not in RATE_LIMIT_CLASSES:
                raise InvalidRequest(
                    f"Rate limits are set for {', '.join(RATE_LIMIT_CLASSES)}, not {name!r}.",
                    param=name,
                )
            if value is not None:
                check_rate_limit(value, param=name)
        async with self.uow.transaction() as tx:
            merchant = await tx.repo.get_merchant(merchant_id)
            if merchant is None:
                raise ResourceMissing(f"No such merchant: '{merchant_id}'", param="merchant")
            current = await tx.repo.merchant_rate_limits(merchant_id) or {}
            merged = {k: v for k, v in (current | dict(limits)).items() if v is not None}
            await tx.repo.set_merchant_rate_limits(merchant_id, merged or None)
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.MERCHANT_RATE_LIMITS_UPDATE,
                    merchant_id=merchant_id,
                    resource=("merchant", merchant_id),
                    details={"rate_limits": merged},
                )
            )
            await tx.commit()
        self._key_cache.clear()
        return merged

    async def create_key(
        self,
        merchant_id: str,
        kind: KeyKind,
        *,
        livemode: bool,
        scopes: Iterable[str] = (),
        actor: Actor = SYSTEM,
        origin: Origin = NO_ORIGIN,
    ) -> IssuedKey:
        """A new API key; its secret is in the answer only. `actor` is who asked: the CLI by
        default, or an operator in the console. A restricted key needs at least one scope."""
        granted = sorted(set(scopes))
        if (kind is KeyKind.RESTRICTED) != bool(granted):
            raise InvalidRequest(
                "A restricted key needs scopes, and only a restricted key takes them.",
                param="scopes",
            )
        if unknown := [s for s in granted if s not in self.scopes]:
            known = ", ".join(sorted(self.scopes))
            raise InvalidRequest(f"Unknown scope {unknown[0]!r}; scopes: {known}.", param="scopes")
        mode = "live" if livemode else "test"
        secret = f"{_PREFIX[kind]}_{mode}_{secrets.token_urlsafe(32)}"
        issued = IssuedKey(
            id=new_id("key", 16),
            merchant_id=merchant_id,
            kind=kind,
            livemode=livemode,
            secret=secret,
            display=f"{secret[:12]}…{secret[-4:]}",
        )
        async with self.uow.transaction() as tx:
            if await tx.repo.get_merchant(merchant_id) is None:
                raise ResourceMissing(f"No such merchant: '{merchant_id}'", param="merchant")
            await tx.repo.add_api_key(
                {
                    "id": issued.id,
                    "merchant_id": merchant_id,
                    "kind": kind,
                    "livemode": livemode,
                    "key_hash": self.key_hash(secret),
                    "display": issued.display,
                    "scopes": granted or None,
                    "created_at": self.clock.now(),
                }
            )
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.API_KEY_CREATE,
                    actor=actor,
                    origin=origin,
                    merchant_id=merchant_id,
                    livemode=livemode,
                    resource=("api_key", issued.id),
                    details={"kind": str(kind)} | ({"scopes": granted} if granted else {}),
                )
            )
            await tx.commit()
        return issued

    async def revoke_key(self, key_id: str) -> None:
        async with self.uow.transaction() as tx:
            revoked = await tx.repo.revoke_api_key(key_id, self.clock.now())
            if revoked is None:
                raise ResourceMissing(f"No such active key: '{key_id}'", param="key")
            merchant_id, livemode = revoked
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.API_KEY_REVOKE,
                    merchant_id=merchant_id,
                    livemode=livemode,
                    resource=("api_key", key_id),
                )
            )
            await tx.commit()
        self._key_cache = {
            digest: entry for digest, entry in self._key_cache.items() if entry[0].key_id != key_id
        }

    async def authenticate(self, raw: str, origin: Origin = NO_ORIGIN) -> Authenticated:
        """Find the key by its keyed hash. The lookup is by digest, so timing reveals nothing
        about the secret; the final comparison is constant-time all the same. A refusal is
        audited, with the presented key only as a pseudonym (repeats correlate; the key does
        not leak into the log)."""
        digest = self.key_hash(raw)
        now = self.clock.now()
        cached = self._key_cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.uow.reading() as repo:
            row = await repo.find_api_key(digest)
        if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
            self._key_cache.pop(digest, None)
            await self.audit.record_alone(
                self.audit.event(
                    AuditTag.API_KEY_AUTHENTICATE,
                    actor=Actor(ActorType.ANONYMOUS),
                    outcome=Outcome.FAILURE,
                    merchant_id=row.merchant_id if row is not None else None,
                    livemode=row.livemode if row is not None else None,
                    origin=origin,
                    resource=("api_key", row.id) if row is not None else None,
                    subject=self.audit.pseudonym(raw),
                    details={"reason": "revoked" if row is not None else "unknown_key"},
                )
            )
            raise AuthenticationError("Invalid API key provided.")
        auth = Authenticated(
            Caller(
                merchant_id=row.merchant_id,
                livemode=row.livemode,
                scopes=frozenset(row.scopes) if row.scopes is not None else None,
            ),
            KeyKind(row.kind),
            row.id,
            rate_limits=row.rate_limits,
        )
        if self._key_cache_ttl:
            if len(self._key_cache) >= self.CACHE_LIMIT:
                self._key_cache.clear()
            self._key_cache[digest] = (auth, now + self._key_cache_ttl)
        return auth


def check_rate_limit(value: str, *, param: str) -> None:
    """A limit in the `limits` library's notation: "100/second", "6000 per minute"."""
    try:
        parse(value)
    except ValueError:
        raise InvalidRequest(
            f"Invalid {param}: {value!r} is not a rate such as '100/second'.", param=param
        ) from None
