"""Rate-limit counters: in this process (`memory://`, embedded) or in Redis (`redis://…`),
where every app process shares them.

Two kinds. The login throttle's moving windows are the `limits` library's storage as it comes
(`storage_from_url`). The API's sliding-window counters (`windows_from_url`) are asked on every
request both to count it and for where its window then stands (for the RateLimit fields): the
library does that in two Redis round trips, so in Redis they are one script of our own that does
both in one, on the library's algorithm (below); in memory they are the library's own.

The sliding-window counter: a limit's window has a current and a previous counter, and a request
is admitted while floor(previous * the share of the previous window still in the sliding one)
+ current stays within the limit, so a client cannot double its rate at a window's edge. In
Redis a window starts at its key's first hit: the current counter's key lives for two windows,
and once less than one window of its life is left, it becomes the previous counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

# KEYS: the current and the previous counter. ARGV: the limit, the window in ms, the cost of
# this request (0 only asks where the window stands). Returns admitted (1 or 0), then the
# previous count and its ms to live, then the current count and its ms to live.
ACQUIRE = """
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local life = redis.call('PTTL', KEYS[1])
if life > 0 and life < window then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[1], 0, 'PX', life + window)
  life = life + window
end
local current = tonumber(redis.call('GET', KEYS[1])) or 0
local previous = tonumber(redis.call('GET', KEYS[2])) or 0
local previous_life = math.max(redis.call('PTTL', KEYS[2]), 0)
local admitted = 0
if cost > 0 and math.floor(previous * previous_life / window) + current + cost <= limit then
  if life > 0 then
    current = redis.call('INCRBY', KEYS[1], cost)
  else
    redis.call('SET', KEYS[1], cost, 'PX', 2 * window)
    current, life = cost, 2 * window
  end
  admitted = 1
end
return {admitted, previous, previous_life, current, math.max(life, 0)}
"""


@dataclass(frozen=True)
class Counts:
    """A sliding window's two counters, and the seconds each has left."""

    previous: int
    previous_expires_in: float
    current: int
    current_expires_in: float


class WindowCounters(Protocol):
    async def acquire(self, key: str, limit: int, expiry: int) -> tuple[bool, Counts]:
        """Count one request against `key`'s window of `expiry` seconds if it is within
        `limit`: whether it was, and the counts afterwards."""
        ...

    async def counts(self, key: str, expiry: int) -> Counts: ...

    async def check(self) -> bool: ...

    async def reset(self) -> None:
        """Remove every counter (under this installation's prefix)."""
        ...

    async def aclose(self) -> None: ...


class MemoryWindows:
    """The limits library's in-process sliding windows (aligned to the clock's whole windows)."""

    def __init__(self) -> None:
        self.storage = MemoryStorage()

    async def acquire(self, key: str, limit: int, expiry: int) -> tuple[bool, Counts]:
        admitted = await self.storage.acquire_sliding_window_entry(key, limit, expiry)
        return admitted, await self.counts(key, expiry)

    async def counts(self, key: str, expiry: int) -> Counts:
        return Counts(*await self.storage.get_sliding_window(key, expiry))

    async def check(self) -> bool:
        return await self.storage.check()

    async def reset(self) -> None:
        await self.storage.reset()

    async def aclose(self) -> None:
        pass


class RedisWindows:
    """Sliding windows in Redis: one script call per request, shared by every app process."""

    def __init__(self, url: str, *, key_prefix: str) -> None:
        # A hung Redis must not hang the API: a request waits at most a second for its count.
        self.redis = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self.script = self.redis.register_script(ACQUIRE)
        self.prefix = key_prefix

    async def acquire(self, key: str, limit: int, expiry: int) -> tuple[bool, Counts]:
        return await self._run(key, limit, expiry, cost=1)

    async def counts(self, key: str, expiry: int) -> Counts:
        return (await self._run(key, 0, expiry, cost=0))[1]

    async def _run(self, key: str, limit: int, expiry: int, *, cost: int) -> tuple[bool, Counts]:
        # The braces keep both counters on one Redis Cluster node.
        current = f"{self.prefix}:{{{key}}}"
        answer = await self.script(
            keys=[current, current + "/previous"], args=[limit, expiry * 1000, cost]
        )
        admitted, previous, previous_ms, count, count_ms = (int(v) for v in answer)
        return bool(admitted), Counts(previous, previous_ms / 1000, count, count_ms / 1000)

    async def check(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except aioredis.RedisError:
            return False

    async def reset(self) -> None:
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        if keys:
            await self.redis.delete(*keys)

    async def aclose(self) -> None:
        await self.redis.aclose()


def windows_from_url(url: str, *, key_prefix: str = "strongroom") -> WindowCounters:
    if _in_redis(url):
        return RedisWindows(url, key_prefix=key_prefix)
    return MemoryWindows()


def storage_from_url(url: str, *, key_prefix: str = "strongroom") -> Storage:
    if _in_redis(url):
        # redis-py (with hiredis) costs about a third less CPU per call than coredis.
        return RedisStorage("async+" + url, key_prefix=key_prefix, implementation="redispy")
    return MemoryStorage()


def _in_redis(url: str) -> bool:
    if url != "memory://" and not url.startswith("redis://"):
        raise ValueError(f"STRONGROOM_RATELIMIT_URL must be memory:// or redis://…, not {url!r}")
    return url != "memory://"
