"""The FastAPI app factory. Nothing is built at import time: `create_app()` wires a Container
(from settings, or one a test passes in) and, when asked, runs the worker loops in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from strongroom import __version__
from strongroom.bootstrap import Container, bootstrap
from strongroom.entrypoints import logs, worker
from strongroom.entrypoints.api import errors
from strongroom.entrypoints.api.middleware import EdgeMiddleware
from strongroom.entrypoints.api.pan_guard import PanGuard
from strongroom.entrypoints.api.rate_limiting import RateLimitMiddleware
from strongroom.entrypoints.api.routes import (
    audit,
    bank_accounts,
    checkout,
    console,
    console_admin,
    customers,
    gateway_accounts,
    gateway_webhooks,
    health,
    operator_tokens,
    payment_intents,
    refunds,
    reports,
    sandbox,
    tokens,
    webhook_endpoints,
)
from strongroom.entrypoints.api.routes import metrics as metrics_route
from strongroom.entrypoints.api.telemetry import Telemetry
from strongroom.settings import Settings


def create_app(
    container: Container | None = None,
    *,
    settings: Settings | None = None,
    run_worker: bool = False,
) -> FastAPI:
    owned = container is None
    built = container or bootstrap(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        loop = asyncio.create_task(worker.run_forever(built, stop)) if run_worker else None
        try:
            yield
        finally:
            stop.set()
            if loop is not None:
                await loop
            if owned:
                await built.aclose()

    app = FastAPI(
        title="Strongroom",
        version=__version__,
        description="A self-hosted, secure-by-design payments backend.",
        lifespan=lifespan,
    )
    app.state.container = built
    errors.install(app)
    routers = (
        health,
        customers,
        payment_intents,
        refunds,
        reports,
        audit,
        sandbox,
        tokens,
        checkout,
        console,
        console_admin,
        operator_tokens,
    )
    for module in (*routers, webhook_endpoints, gateway_accounts, gateway_webhooks, bank_accounts):
        app.include_router(module.router)
    app.include_router(metrics_route.router)  # outside the documented API
    # The last added is outermost: EdgeMiddleware (request id, body cap) → rate limits per
    # address → PanGuard → routes.
    app.add_middleware(PanGuard)
    if built.rate_limits is not None:
        app.add_middleware(RateLimitMiddleware, limits=built.rate_limits)
    app.add_middleware(EdgeMiddleware, max_body_bytes=built.settings.max_body_bytes)
    # Outside even the edge: latency and spans cover requests it refuses (413, PAN guard).
    app.add_middleware(Telemetry, metrics=built.metrics, tracing=built.tracing)
    return app


def app_from_environment() -> FastAPI:
    """The factory `strongroom serve` hands to uvicorn (one call per server process).

    Logging is set up here, in each server process: uvicorn starts worker processes afresh, so
    set-up done by the CLI does not reach them, and structlog's development defaults would
    print tracebacks with local variables (request headers, keys) into the log."""
    settings = Settings()
    logs.configure(settings.log_level)
    return create_app(settings=settings, run_worker=settings.serve_worker)
