"""The report cache (no I/O): a result is reused for `max_age` on the clock and then computed
anew, concurrent asks share one computation, and a failure is never served again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from strongroom.adapters.reporting.port import ReportName, ReportQuery
from strongroom.service_layer.reporting import Report, ReportCache
from tests.support import FakeClock

QUERY = ReportQuery(livemode=False, merchant_id="acct_1")


class Counting:
    """A stand-in for the reporting store's query: counts calls, can be held or made to fail."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self) -> Report:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("store down")
        return Report(ReportName.VOLUME, [{"count": self.calls}], self.clock.now())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_a_result_is_reused_until_it_is_max_age_old(clock: FakeClock) -> None:
    cache = ReportCache(clock, timedelta(seconds=5))
    compute = Counting(clock)
    first = await cache.get(ReportName.VOLUME, QUERY, compute)
    clock.advance(seconds=4.999)
    assert await cache.get(ReportName.VOLUME, QUERY, compute) is first
    clock.advance(seconds=0.001)
    again = await cache.get(ReportName.VOLUME, QUERY, compute)
    assert again.rows == [{"count": 2}]
    assert again.computed_at == clock.now()
    assert compute.calls == 2


async def test_each_report_and_query_has_its_own_entry(clock: FakeClock) -> None:
    cache = ReportCache(clock, timedelta(seconds=5))
    compute = Counting(clock)
    other_merchant = ReportQuery(livemode=False, merchant_id="acct_2")
    live = ReportQuery(livemode=True, merchant_id="acct_1")
    for name, query in [
        (ReportName.VOLUME, QUERY),
        (ReportName.REFUND_RATE, QUERY),
        (ReportName.VOLUME, other_merchant),
        (ReportName.VOLUME, live),
    ]:
        await cache.get(name, query, compute)
    assert compute.calls == 4


async def test_zero_max_age_computes_every_time(clock: FakeClock) -> None:
    cache = ReportCache(clock, timedelta(0))
    compute = Counting(clock)
    for _ in range(3):
        await cache.get(ReportName.VOLUME, QUERY, compute)
    assert compute.calls == 3


async def test_concurrent_asks_share_one_computation(clock: FakeClock) -> None:
    cache = ReportCache(clock, timedelta(0))  # even uncached, asks in flight together share
    compute = Counting(clock)
    compute.gate = asyncio.Event()
    asks = [asyncio.create_task(cache.get(ReportName.VOLUME, QUERY, compute)) for _ in range(20)]
    await asyncio.sleep(0)  # let every ask reach the cache (scheduling, not timing)
    compute.gate.set()
    results = await asyncio.gather(*asks)
    assert compute.calls == 1
    assert all(r is results[0] for r in results)


async def test_a_failure_is_not_served_again(clock: FakeClock) -> None:
    cache = ReportCache(clock, timedelta(seconds=5))
    compute = Counting(clock)
    compute.fail = True
    with pytest.raises(ConnectionError):
        await cache.get(ReportName.VOLUME, QUERY, compute)
    compute.fail = False
    recovered = await cache.get(ReportName.VOLUME, QUERY, compute)
    assert recovered.rows == [{"count": 2}]


async def test_a_cancelled_ask_does_not_cancel_the_others(clock: FakeClock) -> None:
    cache = ReportCache(clock, timedelta(seconds=5))
    compute = Counting(clock)
    compute.gate = asyncio.Event()
    leaving = asyncio.create_task(cache.get(ReportName.VOLUME, QUERY, compute))
    staying = asyncio.create_task(cache.get(ReportName.VOLUME, QUERY, compute))
    await asyncio.sleep(0)
    leaving.cancel()
    compute.gate.set()
    assert (await staying).rows == [{"count": 1}]
    assert leaving.cancelled()


async def test_the_cache_keeps_at_most_size_entries(clock: FakeClock) -> None:
    cache = ReportCache(clock, timedelta(seconds=5), size=2)
    compute = Counting(clock)
    queries = [ReportQuery(livemode=False, merchant_id=f"acct_{i}") for i in range(3)]
    for query in queries:
        await cache.get(ReportName.VOLUME, query, compute)
    await cache.get(ReportName.VOLUME, queries[2], compute)  # newest: kept
    await cache.get(ReportName.VOLUME, queries[0], compute)  # oldest: pushed out, computed again
    assert compute.calls == 4
