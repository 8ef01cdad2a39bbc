"""Prometheus metrics: one registry per Container, typed helpers the rest of the code calls,
and the state read from the database at scrape time.

Two kinds of metric live here, because a process can only count what happens in it:

- Events (request latency, webhook deliveries, rate-limit refusals, breaker states) are
  counted in memory by the process they happen in. Prometheus's model is one scrape target
  per process; `strongroom serve` runs the worker loops in-process by default, so its /metrics
  holds the worker's counters too. Counters of a separate `strongroom worker` process, or of
  the other processes of `serve --workers N`, are not in this process's /metrics.
- State (payment intents by status, outbox backlog, projection lag) is read from the stores
  when /metrics is scraped, so it is right however many processes write it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime, timedelta
from enum import StrEnum

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strongroom.adapters.db import outbox_store
from strongroom.adapters.db import tables as t
from strongroom.domain.model import PIStatus

log = structlog.get_logger(__name__)

# The route label of a request no route matched: its raw path could be anything (ids, probes),
# and every distinct label value is a new time series kept forever.
UNMATCHED_ROUTE = "unmatched"
# Seconds; from a cached read (~1 ms) to a gateway call that timed out.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


def status_class(status: int) -> str:
    """'2xx', '4xx', '5xx': the status label, coarse enough to keep series few."""
    return f"{status // 100}xx"


class Metrics:
    """A container's metrics. Its registry is its own, not prometheus_client's global one, so
    containers (and tests) never see each other's counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._latency = Histogram(
            "strongroom_http_request_duration_seconds",
            "Time to answer an API request, by method, route template and status class.",
            ["method", "route", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._webhook_deliveries = Counter(
            "strongroom_webhook_deliveries",
            "Webhook delivery attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._rate_limit_refusals = Counter(
            "strongroom_rate_limit_refusals",
            "Requests refused by a rate limiter, by limiter name.",
            ["limiter"],
            registry=self.registry,
        )
        self._rate_limiter_errors = Counter(
            "strongroom_rate_limiter_errors",
            "Requests whose rate-limit counters could not be reached, by route class and what "
            "was done (open: answered anyway; closed: refused with 503).",
            ["route_class", "outcome"],
            registry=self.registry,
        )
        self._breaker = Gauge(
            "strongroom_gateway_breaker_state",
            "1 for the state each gateway's circuit breaker is in (in this process), else 0.",
            ["gateway", "state"],
            registry=self.registry,
        )

    # --- helpers other modules call ------------------------------------------------------------
    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One API request answered. `route` is the template (`/v1/payment_intents/{id}`),
        never the raw path."""
        self._latency.labels(method, route, status_class(status)).observe(seconds)

    def record_webhook_delivery(self, outcome: str) -> None:
        """One delivery attempt finished with `outcome` (a small fixed set of words, such as
        'succeeded', 'failed', 'timeout'; never a URL or a response body)."""
        self._webhook_deliveries.labels(outcome).inc()

    def record_rate_limit_refusal(self, limiter: str) -> None:
        """A rate limiter (named like 'ip.login', never by the key or address it limits)
        refused a request."""
        self._rate_limit_refusals.labels(limiter).inc()

    def record_rate_limiter_error(self, route_class: str, outcome: str) -> None:
        self._rate_limiter_errors.labels(route_class, outcome).inc()

    def set_breaker_state(self, gateway: str, state: BreakerState) -> None:
        """Gateway `gateway`'s breaker is now in `state`: that state's series is 1, the others
        0, so an alert can be `strongroom_gateway_breaker_state{state="open"} == 1`."""
        for each in BreakerState:
            self._breaker.labels(gateway, each.value).set(1 if each is state else 0)

    # --- exposition ----------------------------------------------------------------------------
    async def exposition(
        self,
        engine: AsyncEngine,
        now: datetime,
        *,
        projection_lag: Callable[[], object] | None = None,
    ) -> bytes:
        """The Prometheus text for a scrape: this process's counters, then the state read now.
        A store that cannot be read leaves its metrics out and sets its
        `strongroom_metrics_source_up` to 0 instead of failing the whole scrape."""
        up = GaugeMetricFamily(
            "strongroom_metrics_source_up",
            "1 when the scrape could read this source's state, else 0.",
            labels=["source"],
        )
        families: list[Metric] = []

        async def database() -> list[Metric]:
            async with engine.connect() as conn:
                return [*await _payment_intents(conn), *await _outbox(conn, now)]

        sources: dict[str, Callable[[], Awaitable[list[Metric]]]] = {"database": database}
        if projection_lag is not None:
            sources["projection"] = lambda: _projection(projection_lag)
        for name, read in sources.items():
            try:
                families.extend(await read())
            except Exception as exc:  # a scrape reports a broken source; it does not fail
                log.warning("metrics source unreadable", source=name, error=type(exc).__name__)
                up.add_metric([name], 0)
            else:
                up.add_metric([name], 1)
        families.append(up)
        return generate_latest(_Scrape(self.registry, families))


class _Scrape(Collector):
    """The registry's metrics and this scrape's state, as one collector: each scrape renders
    the state it read itself, so concurrent scrapes share nothing."""

    def __init__(self, registry: CollectorRegistry, state: list[Metric]) -> None:
        self.registry = registry
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.state


async def _payment_intents(conn: AsyncConnection) -> Iterable[Metric]:
    """Payment intents by status and mode: one GROUP BY, every known status reported (as 0 when
    none), so a series does not vanish when its last intent moves on."""
    pi = t.payment_intents
    rows = (
        await conn.execute(
            select(pi.c.status, pi.c.livemode, func.count()).group_by(pi.c.status, pi.c.livemode)
        )
    ).all()
    counts = {(str(status), bool(live)): int(n) for status, live, n in rows}
    family = GaugeMetricFamily(
        "strongroom_payment_intents",
        "Payment intents in the write store, by status and mode.",
        labels=["status", "livemode"],
    )
    statuses = [s.value for s in PIStatus]
    statuses += sorted({s for s, _ in counts} - set(statuses))
    for status in statuses:
        for live in (False, True):
            family.add_metric([status, str(live).lower()], counts.get((status, live), 0))
    return [family]


async def _outbox(conn: AsyncConnection, now: datetime) -> Iterable[Metric]:
    waiting, oldest = await outbox_store.backlog(conn)
    age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return [
        GaugeMetricFamily(
            "strongroom_outbox_unpublished_events",
            "Committed events the relay has not yet published.",
            value=waiting,
        ),
        GaugeMetricFamily(
            "strongroom_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished event (0 when none waits).",
            value=age,
        ),
    ]


async def _projection(lag: Callable[[], object]) -> list[Metric]:
    """The reporting projection's lag, from whatever `lag()` returns: a timedelta or seconds,
    sync or async. None means the projection cannot say (nothing is reported)."""
    value = lag()
    if inspect.isawaitable(value):
        value = await value
    if value is None:
        return []
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"lag() returned {type(value).__name__}, not seconds or a timedelta")
    if math.isnan(seconds):
        return []
    return [
        GaugeMetricFamily(
            "strongroom_projection_lag_seconds",
            "How far the reporting store is behind the write store.",
            value=max(seconds, 0.0),
        )
    ]
