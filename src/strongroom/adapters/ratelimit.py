"""Rate-limit counters, with the `limits` library: in this process (`memory://`, embedded) or
in Redis (`redis://…`), where every app process shares them."""

from __future__ import annotations

from limits.aio.storage import MemoryStorage, RedisStorage, Storage


def storage_from_url(url: str, *, key_prefix: str = "strongroom") -> Storage:
    if url == "memory://":
        return MemoryStorage()
    if url.startswith("redis://"):
        # redis-py (with hiredis) costs about a third less CPU per call than coredis, and
        # every API request makes a few.
        return RedisStorage("async+" + url, key_prefix=key_prefix, implementation="redispy")
    raise ValueError(f"STRONGROOM_RATELIMIT_URL must be memory:// or redis://…, not {url!r}")
