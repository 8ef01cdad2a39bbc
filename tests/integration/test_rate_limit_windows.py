"""The API's sliding-window counters in the Redis at 127.0.0.1:6379: one script call counts a
request and reads its window back; the previous window's count is weighted by how much of it
still overlaps. Time passing is simulated by shortening the counters' time to live, as Redis's
own clock would, rather than by waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from limits import parse

from strongroom.adapters.ratelimit import Counts, RedisWindows, windows_from_url
from strongroom.domain.errors import RateLimited
from strongroom.service_layer.rate_limits import Defaults, RateLimits, RouteClass
from tests.support import service_missing, unique_name

REDIS = "redis://127.0.0.1:6379/0"
MINUTE = 60


@pytest.fixture
async def windows() -> AsyncIterator[RedisWindows]:
    counters = RedisWindows(REDIS, key_prefix=unique_name("strongroom_test"))
    if not await counters.check():
        service_missing("Redis at 127.0.0.1:6379", "it does not answer")
    yield counters
    await counters.reset()
    await counters.aclose()


async def _age(windows: RedisWindows, key: str, *, left_ms: int) -> None:
    """Move time on until the current counter has `left_ms` to live."""
    await windows.redis.pexpire(f"{windows.prefix}:{{{key}}}", left_ms)


async def test_one_call_counts_and_reads_back_and_refuses_past_the_limit(
    windows: RedisWindows,
) -> None:
    answers = [await windows.acquire("k", 3, MINUTE) for _ in range(4)]
    assert [admitted for admitted, _ in answers] == [True, True, True, False]
    assert [counts.current for _, counts in answers] == [1, 2, 3, 3], "a refusal is not counted"
    first = answers[0][1]
    assert (first.previous, first.previous_expires_in) == (0, 0)
    # A window starts at its first hit; its counter lives for two windows.
    assert 2 * MINUTE - 1 < first.current_expires_in <= 2 * MINUTE
    assert (await windows.counts("k", MINUTE)).current == 3, "reading counts nothing"
    assert (await windows.acquire("other", 3, MINUTE))[0], "each key has its own window"


async def test_the_last_window_weighs_by_how_much_of_it_still_overlaps(
    windows: RedisWindows,
) -> None:
    for _ in range(3):
        await windows.acquire("k", 4, MINUTE)
    # The window ended 15 s ago: three quarters of it still overlap, so its 3 weigh 2.25,
    # floored to 2, leaving room for 2 more of 4.
    await _age(windows, "k", left_ms=45_000)
    answers = [await windows.acquire("k", 4, MINUTE) for _ in range(3)]
    assert [admitted for admitted, _ in answers] == [True, True, False]
    counts = answers[-1][1]
    assert (counts.previous, counts.current) == (3, 2)
    assert 44 < counts.previous_expires_in <= 45
    assert 104 < counts.current_expires_in <= 105, "the new window ends 45 s from now"


async def test_concurrent_hits_from_many_clients_admit_exactly_the_limit(
    windows: RedisWindows,
) -> None:
    others = [RedisWindows(REDIS, key_prefix=windows.prefix) for _ in range(3)]
    try:
        answers = await asyncio.gather(*(others[i % 3].acquire("k", 50, MINUTE) for i in range(80)))
    finally:
        for other in others:
            await other.aclose()
    assert sum(admitted for admitted, _ in answers) == 50
    assert sorted(c.current for admitted, c in answers if admitted) == list(range(1, 51))


async def test_the_window_fields_and_retry_after_come_from_the_one_call(
    windows: RedisWindows,
) -> None:
    limits = RateLimits(
        windows, Defaults(per_key={RouteClass.READS: parse("2/minute")}, per_address={})
    )
    first = await limits.per_key(RouteClass.READS, "key_1", None)
    assert first is not None
    assert (first.remaining, first.quota, first.seconds) == (1, 2, MINUTE)
    assert 59 <= first.reset <= 60
    await limits.per_key(RouteClass.READS, "key_1", None)
    with pytest.raises(RateLimited) as refused:
        await limits.per_key(RouteClass.READS, "key_1", None)
    assert 1 <= refused.value.retry_after <= 60


async def test_reset_removes_only_this_prefix(windows: RedisWindows) -> None:
    neighbour = RedisWindows(REDIS, key_prefix=unique_name("strongroom_test"))
    try:
        await windows.acquire("k", 1, MINUTE)
        await neighbour.acquire("k", 1, MINUTE)
        await windows.reset()
        assert await windows.counts("k", MINUTE) == Counts(0, 0, 0, 0)
        assert (await neighbour.counts("k", MINUTE)).current == 1
    finally:
        await neighbour.reset()
        await neighbour.aclose()


async def test_memory_counters_answer_alike_within_a_window() -> None:
    memory = windows_from_url("memory://")
    answers = [await memory.acquire("k", 2, 86_400) for _ in range(3)]
    assert [(admitted, counts.current) for admitted, counts in answers] == [
        (True, 1),
        (True, 2),
        (False, 2),
    ]
