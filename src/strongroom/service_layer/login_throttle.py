"""Sign-in abuse defences that do not depend on the account (which the answer must not reveal):
how often one address and one network may try, and what happens to an address that tries many
accounts (credential stuffing and password spraying).

  per address   20 attempts in any 5 minutes (a moving window);
  per network   100 attempts in any 5 minutes from one IPv4 /24 or IPv6 /56;
  spraying      an address whose wrong passwords have named 5 different accounts within the
                hour is slowed to one attempt per 10 seconds; at 20 accounts it is blocked until
                that hour's window has passed.

Every refusal is RateLimited with the seconds to wait. The counters live in the rate-limit
storage (memory, or Redis shared by every process). The per-account lockout is the Operators
service's; this only looks at sources.
"""

from __future__ import annotations

import hashlib
import time
from ipaddress import ip_address, ip_network

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter

from strongroom.domain.errors import RateLimited

PER_ADDRESS = parse("20/5 minutes")
PER_NETWORK = parse("100/5 minutes")
SLOWED = parse("1/10 seconds")
ACCOUNTS_PER_HOUR = parse("10000/hour")  # a counter: the limit itself is never reached
PAIR_PER_HOUR = parse("1/hour")  # the first failure naming an account counts it
SLOW_AFTER = 5
BLOCK_AFTER = 20
REFUSED = "Too many sign-in attempts from your network; try again later."


UNKNOWN = "unknown"  # requests with no client address share one budget


def network_of(address: str) -> str | None:
    """The /24 of an IPv4 address, the /56 of an IPv6 one; None for what is not an address."""
    try:
        ip = ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 56
    return str(ip_network(f"{ip}/{prefix}", strict=False))


class LoginThrottle:
    def __init__(self, storage: Storage) -> None:
        self.limiter = MovingWindowRateLimiter(storage)

    async def admit(self, address: str | None) -> None:
        """Count an attempt from `address`, or raise RateLimited. Attempts with no address
        (a unix socket, say) share one budget."""
        address = address or UNKNOWN
        accounts = await self._accounts_tried(address)
        if accounts >= BLOCK_AFTER:
            wait = await self._wait(ACCOUNTS_PER_HOUR, "accounts", address)
            raise RateLimited(REFUSED, retry_after=wait)
        if accounts >= SLOW_AFTER and not await self.limiter.hit(SLOWED, "slow", address):
            raise RateLimited(REFUSED, retry_after=await self._wait(SLOWED, "slow", address))
        windows = [(PER_ADDRESS, ("ip", address))]
        if (network := network_of(address)) is not None:
            windows.append((PER_NETWORK, ("net", network)))
        for item, key in windows:
            if not await self.limiter.hit(item, *key):
                raise RateLimited(REFUSED, retry_after=await self._wait(item, *key))

    async def failed(self, address: str | None, email: str) -> None:
        """A wrong password from `address` for `email` (known or not)."""
        address = address or UNKNOWN
        named = hashlib.sha256(email.encode()).hexdigest()[:32]
        if await self.limiter.hit(PAIR_PER_HOUR, "pair", address, named):
            await self.limiter.hit(ACCOUNTS_PER_HOUR, "accounts", address)

    async def _accounts_tried(self, address: str) -> int:
        stats = await self.limiter.get_window_stats(ACCOUNTS_PER_HOUR, "accounts", address)
        return ACCOUNTS_PER_HOUR.amount - stats.remaining

    async def _wait(self, item: RateLimitItem, *key: str) -> int:
        # The window's reset is on the limits library's clock, which is time.time().
        stats = await self.limiter.get_window_stats(item, *key)
        return int(stats.reset_time - time.time()) + 1
