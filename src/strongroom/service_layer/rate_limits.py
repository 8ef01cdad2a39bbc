"""API rate limits, with the `limits` library's sliding-window counters: per client address for
every request, and per API key once the key is known, each by route class. (A sliding-window
counter is two counters per limit, O(1) in Redis at any rate; a moving window keeps one entry
per request, and its Redis script slows down as a high limit's list grows.)

  route class   what it covers                                        if the counters are down
  reads         GET and HEAD                                          fail open (answered)
  writes        POST, PUT, PATCH, DELETE                              fail closed (503)
  login         console sign-in, second factor, POST /oauth/token    fail closed (503)
  webhooks      gateways' webhooks, /v1/webhooks/…                    fail open (answered)

Reads and gateways' webhooks stay up when Redis is down (nothing is written on a read, and a
gateway would only retry); writes and sign-ins wait for it, so an outage of the shared
counters never opens a door to unlimited writes or password guessing. Either way the outage is
logged and counted (`strongroom_rate_limiter_errors{route_class, outcome}`).

The counters (adapters/ratelimit.py) are in this process (memory://) or in Redis, shared by
every app process, where each request is one atomic script that counts it and reads its window
back, so N app processes together admit exactly the limit, and counting costs one round trip.
Each answer says where it stands in the IETF httpapi draft's fields (RateLimit-Policy and
RateLimit: quota `q`, window `w`, remaining `r`, seconds to reset `t`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import structlog
from limits import RateLimitItem, parse

from strongroom.adapters.ratelimit import Counts, WindowCounters
from strongroom.domain.errors import RateLimited, ServiceUnavailable

log = structlog.get_logger(__name__)


class RouteClass(StrEnum):
    READS = "reads"
    WRITES = "writes"
    LOGIN = "login"
    WEBHOOKS = "webhooks"


FAIL_CLOSED = frozenset({RouteClass.WRITES, RouteClass.LOGIN})
LOGIN_PATHS = frozenset(
    {
        "/console/sign-in",
        "/console/second-factor",
        "/console/webauthn/authenticate",
        "/console/webauthn/authenticate/options",
        "/oauth/token",
    }
)
REFUSED = "Too many requests; slow down and retry after the time in Retry-After."


def route_class(method: str, path: str) -> RouteClass:
    if path.startswith("/v1/webhooks/"):
        return RouteClass.WEBHOOKS
    if path in LOGIN_PATHS:
        return RouteClass.LOGIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return RouteClass.READS
    return RouteClass.WRITES


@dataclass(frozen=True)
class Window:
    """Where one limit stands after a request: for the RateLimit fields."""

    name: str  # e.g. "key-writes" (never the key or the address)
    quota: int
    seconds: int
    remaining: int
    reset: int  # seconds until the oldest counted request leaves the window

    def policy_field(self) -> str:
        return f'"{self.name}";q={self.quota};w={self.seconds}'

    def field(self) -> str:
        return f'"{self.name}";r={self.remaining};t={self.reset}'


@dataclass(frozen=True)
class Defaults:
    """The installation's limits: per key (a merchant may set its own reads and writes) and
    per client address."""

    per_key: Mapping[RouteClass, RateLimitItem]
    per_address: Mapping[RouteClass, RateLimitItem]


class RateLimits:
    def __init__(
        self,
        counters: WindowCounters,
        defaults: Defaults,
        *,
        on_refusal: Callable[[str], None] = lambda name: None,
        on_error: Callable[[RouteClass, str], None] = lambda route, outcome: None,
    ) -> None:
        self.counters = counters
        self.defaults = defaults
        self.on_refusal = on_refusal
        self.on_error = on_error

    async def aclose(self) -> None:
        await self.counters.aclose()

    async def per_address(self, route: RouteClass, address: str | None) -> Window | None:
        """Count the request against its address's window. Where it stands afterwards is
        fetched only on a refusal: a request with a key shows its key's window instead, and
        `address_window` fetches it for one without."""
        item = self.defaults.per_address.get(route)
        if item is None:
            return None
        return await self._hit(f"ip-{route}", route, item, address or "unknown", stats=False)

    async def address_window(self, route: RouteClass, address: str | None) -> Window | None:
        item = self.defaults.per_address.get(route)
        if item is None:
            return None
        try:
            return await self._window(f"ip-{route}", item, address or "unknown")
        except Exception:
            return None

    async def per_key(
        self, route: RouteClass, key_id: str, merchant_limits: Mapping[str, str] | None
    ) -> Window | None:
        own = (merchant_limits or {}).get(route.value)
        item = _parsed(own) if own else self.defaults.per_key.get(route)
        if item is None:
            return None
        return await self._hit(f"key-{route}", route, item, key_id)

    async def _hit(
        self, name: str, route: RouteClass, item: RateLimitItem, ident: str, *, stats: bool = True
    ) -> Window | None:
        """Count one request; the window afterwards (if `stats`), or Throttled. With the
        counters down: None (fail open) or ServiceUnavailable (fail closed), per route class."""
        try:
            allowed, counts = await self.counters.acquire(
                item.key_for(name, ident), item.amount, item.get_expiry()
            )
        except Exception as exc:  # any failure of the counters' store
            outcome = "closed" if route in FAIL_CLOSED else "open"
            log.warning(
                "rate limiter unavailable", route_class=route.value, outcome=outcome, error=str(exc)
            )
            self.on_error(route, outcome)
            if outcome == "closed":
                raise ServiceUnavailable(
                    "Rate limiting is unavailable, so writes are paused; retry shortly.",
                    code="rate_limiter_unavailable",
                ) from None
            return None
        window = _standing(name, item, counts)
        if not allowed:
            self.on_refusal(name)
            raise Throttled(window)
        return window if stats else None

    async def _window(self, name: str, item: RateLimitItem, ident: str) -> Window:
        counts = await self.counters.counts(item.key_for(name, ident), item.get_expiry())
        return _standing(name, item, counts)


def _standing(name: str, item: RateLimitItem, counts: Counts) -> Window:
    """Where a window stands: what remains of the limit after the weighted count, and the
    seconds until the next request's worth frees up (the sooner of one of the previous
    window's requests leaving the sliding window, or the current window ending)."""
    expiry = item.get_expiry()
    weighted = counts.previous * counts.previous_expires_in / expiry + counts.current
    remaining = max(0, item.amount - math.floor(weighted))
    resets = []
    if counts.previous:
        resets.append(counts.previous_expires_in % (expiry / counts.previous))
    if counts.current:  # its counter lives one window past the window's end
        resets.append(max(0.0, counts.current_expires_in - expiry))
    return Window(name, item.amount, expiry, remaining, math.ceil(min(resets, default=0)))


@functools.lru_cache(maxsize=1024)
def _parsed(limit: str) -> RateLimitItem:
    """A merchant's own limit (e.g. "500/minute"), parsed once rather than on every request."""
    return parse(limit)


class Throttled(RateLimited):
    """A refusal by one window, which the answer's RateLimit fields still show."""

    def __init__(self, window: Window) -> None:
        super().__init__(REFUSED, retry_after=max(1, window.reset))
        self.window = window


def defaults_from(per_key: Mapping[str, str], per_address: Mapping[str, str]) -> Defaults:
    return Defaults(
        per_key={RouteClass(k): parse(v) for k, v in per_key.items()},
        per_address={RouteClass(k): parse(v) for k, v in per_address.items()},
    )
