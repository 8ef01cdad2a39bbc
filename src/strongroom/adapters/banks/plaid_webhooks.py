"""Verification of Plaid's webhook deliveries: the `Plaid-Verification` JWT, checked the way
Plaid documents it, with the signing keys fetched by id and cached until they expire."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt

from strongroom.domain.clock import Clock

__all__ = ["MAX_AGE", "PlaidWebhookVerifier", "WebhookRejected"]

ALGORITHM: Final = "ES256"
# Plaid's rule: a webhook signed more than five minutes ago is refused.
MAX_AGE: Final = timedelta(minutes=5)
# How far ahead of our clock an `iat` may be (clock skew). Without a bound, a token stamped in
# the future would outlive the five-minute window by as much as it is ahead.
MAX_SKEW: Final = timedelta(minutes=5)
# Longer than any kid Plaid issues (a UUID); a longer one is not sent on to Plaid.
MAX_KID_LENGTH: Final = 128

# The JWK fields PyJWK reads; Plaid's `created_at` and `expired_at` are ours to read.
_JWK_FIELDS: Final = ("kty", "crv", "x", "y", "kid", "alg", "use")


class WebhookRejected(Exception):
    """A Plaid webhook delivery failed verification. `reason` is short, for a log line; it
    never quotes the header, the body or a key."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class _Key:
    public: Any  # the cryptography public key PyJWK built from the JWK
    expired_at: datetime | None  # None: Plaid has not retired it

    def live_at(self, now: datetime) -> bool:
        return self.expired_at is None or now < self.expired_at


class PlaidWebhookVerifier:
    """Checks a delivery's `Plaid-Verification` header against its raw body.

    `keys(kid)` fetches Plaid's public JWK for a key id (PlaidProvider.webhook_verification_key)
    and returns None when Plaid has no such key; an exception it raises (Plaid unreachable)
    passes through unchanged, so the webhook route can answer 5xx and Plaid retries the
    delivery later, instead of a genuine webhook being refused for good. Keys are held in
    memory until their `expired_at`, so a burst of webhooks costs one fetch; a key with no
    `expired_at` is asked about again when a new kid appears (Plaid rotating its keys). Time
    comes from `clock`, so tests move it instead of sleeping.
    """

    def __init__(
        self, keys: Callable[[str], Awaitable[Mapping[str, object] | None]], clock: Clock
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._cache: dict[str, _Key] = {}
        # One fetch at a time: concurrent deliveries under a new kid share its first fetch.
        self._fetching = asyncio.Lock()

    async def verify(self, jwt_header_value: str | None, raw_body: bytes) -> None:
        """Return if the delivery is genuine and fresh; raise WebhookRejected otherwise.

        1. Read the JWT's header without verifying anything: it names the key and algorithm.
        2. `alg` must be exactly ES256. The algorithm is fixed here, never taken from the
           token: `none` would need no signature at all, and HS256 keyed with the public key
           (which anyone can fetch) would let anyone sign.
        3. Fetch the public key by `kid` (cached until its `expired_at`). An unknown kid, or a
           key Plaid has retired, is refused: only Plaid's current keys may sign. The key is
           only ever Plaid's, fetched by kid, never one the token carries (jwk, jku, x5u).
        4. Verify the signature with that key, ES256 only. PyJWT's own time checks are off;
           5 does them against the injected clock.
        5. `iat` must be at most five minutes old (and not from the future beyond clock skew):
           a captured delivery cannot be replayed later.
        6. The SHA-256 of the raw body must equal the `request_body_sha256` claim, compared in
           constant time: the signature covers the claim, the claim covers the body, so a
           changed or swapped body is refused. It must be the raw bytes as received: parsing
           and re-serializing the JSON would change the hash.
        """
        if not jwt_header_value:
            raise WebhookRejected("missing Plaid-Verification header")
        try:
            header = jwt.get_unverified_header(jwt_header_value)
        except jwt.PyJWTError:
            raise WebhookRejected("malformed Plaid-Verification JWT") from None
        if header.get("alg") != ALGORITHM:
            raise WebhookRejected("JWT algorithm is not ES256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise WebhookRejected("JWT has no usable key id")

        key = await self._key(kid)

        try:
            claims = jwt.decode(
                jwt_header_value,
                key=key.public,
                algorithms=[ALGORITHM],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.PyJWTError:
            raise WebhookRejected("JWT signature is not valid") from None

        self._check_issued_at(claims.get("iat"))

        claimed = claims.get("request_body_sha256")
        if not isinstance(claimed, str):
            raise WebhookRejected("JWT has no request_body_sha256 claim")
        actual = hashlib.sha256(raw_body).hexdigest()
        if not hmac.compare_digest(actual.encode(), claimed.encode()):
            raise WebhookRejected("body does not match the signed hash")

    def _check_issued_at(self, iat: Any) -> None:
        # bool is an int in Python; `true` is not a time.
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise WebhookRejected("JWT has no iat claim")
        try:
            issued = datetime.fromtimestamp(iat, UTC)
        except (OverflowError, OSError, ValueError):
            raise WebhookRejected("JWT iat is out of range") from None
        now = self._clock.now()
        if now - issued > MAX_AGE:
            raise WebhookRejected("webhook is older than five minutes")
        if issued - now > MAX_SKEW:
            raise WebhookRejected("webhook iat is in the future")

    async def _key(self, kid: str) -> _Key:
        cached = self._cache.get(kid)
        if cached is not None and cached.live_at(self._clock.now()):
            return cached
        async with self._fetching:
            now = self._clock.now()
            cached = self._cache.get(kid)
            if cached is not None and cached.live_at(now):
                return cached  # another delivery fetched it while this one waited
            self._cache.pop(kid, None)  # past its expired_at: ask Plaid again
            jwk = await self._keys(kid)
            if jwk is None:
                raise WebhookRejected("unknown webhook key id")
            key = _parse(jwk, kid)
            if not key.live_at(now):
                raise WebhookRejected("webhook key has expired")
            if cached is None:
                await self._recheck_others(kid)
            self._cache[kid] = key
            return key

    async def _recheck_others(self, new_kid: str) -> None:
        """A genuine kid not seen before means Plaid is rotating keys: ask again about the
        cached keys it had not retired, as Plaid's guide does, so that a key retired since is
        not trusted for ever. (Only after Plaid confirmed the new kid: made-up kids cost one
        fetch each, not one per cached key.)"""
        for other in [k for k, v in self._cache.items() if v.expired_at is None]:
            if other == new_kid:
                continue
            refreshed = await self._keys(other)
            try:
                if refreshed is None:
                    raise WebhookRejected("unknown webhook key id")
                self._cache[other] = _parse(refreshed, other)
            except WebhookRejected:
                del self._cache[other]  # gone or unreadable: it will not verify anything


def _parse(jwk: Mapping[str, object], kid: str) -> _Key:
    """A P-256 signing key from Plaid's JWK; anything else is refused before PyJWT sees it,
    so a key of another type can never pick another algorithm."""
    if (
        jwk.get("kty") != "EC"
        or jwk.get("crv") != "P-256"
        or jwk.get("alg", ALGORITHM) != ALGORITHM
        or jwk.get("use", "sig") != "sig"
        or jwk.get("kid", kid) != kid
    ):
        raise WebhookRejected("webhook key is not an ES256 signing key")
    expired_at = jwk.get("expired_at")
    if expired_at is not None and (
        not isinstance(expired_at, int | float) or isinstance(expired_at, bool)
    ):
        raise WebhookRejected("webhook key has an unreadable expired_at")
    try:
        key = jwt.PyJWK({f: jwk[f] for f in _JWK_FIELDS if f in jwk}, algorithm=ALGORITHM)
        expiry = None if expired_at is None else datetime.fromtimestamp(expired_at, UTC)
    except (jwt.PyJWTError, OverflowError, OSError, ValueError):
        raise WebhookRejected("webhook key could not be read") from None
    return _Key(public=key.key, expired_at=expiry)
