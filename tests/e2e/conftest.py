"""End-to-end fixtures: a real `strongroom serve` process on a real database, reached over TCP.

Nothing here imports the app: the database is migrated with `strongroom db upgrade`, the
merchant is made with `strongroom merchants create`, and the server is the `strongroom serve`
command a user runs, so these tests see exactly what a user (or a browser) sees."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.e2e.server import (
    HOST,
    LiveServer,
    PortTaken,
    cli,
    cli_json,
    free_port,
    server_env,
    serving,
)
from tests.support import asyncpg_url, pg_available, pg_database, service_missing

# Debian's chromium, headless, for the browser tests.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        service_missing("chromium", f"{CHROMIUM} is not installed (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def e2e_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (not migrated: the server's own CLI does that)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'strongroom.db'}"
        return
    reason = pg_available()
    if reason is not None:
        service_missing("PostgreSQL at 127.0.0.1:5432", reason)
    with pg_database("strongroom_e2e") as name:
        yield asyncpg_url(name)


@pytest.fixture
def live_server(e2e_database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A migrated database, a merchant made with the CLI, and `strongroom serve` on a free port."""
    env = server_env(
        STRONGROOM_DATABASE_URL=e2e_database_url,
        # The fuzzing and browser tests send requests faster than any one client should; the
        # rate-limit tests start servers of their own with their own limits.
        STRONGROOM_RATELIMIT_PER_KEY='{"reads": "100000/second", "writes": "100000/second"}',
        STRONGROOM_RATELIMIT_PER_ADDRESS='{"reads": "100000/second", "writes": "100000/second"}',
    )
    cli("db", "upgrade", env=env, cwd=tmp_path)
    merchant = cli_json("merchants", "create", "--name", "E2E", env=env, cwd=tmp_path)
    assert merchant["secret_key"].startswith("sk_test_")
    assert merchant["publishable_key"].startswith("pk_test_")
    log = tmp_path / "server.log"
    for attempt in range(3):
        port = free_port()
        env = {**env, "STRONGROOM_PUBLIC_URL": f"http://{HOST}:{port}"}
        try:
            with serving(port, env=env, cwd=tmp_path, log=log) as url:
                yield LiveServer(
                    base_url=url,
                    merchant_id=merchant["id"],
                    secret_key=merchant["secret_key"],
                    publishable_key=merchant["publishable_key"],
                    database_url=e2e_database_url,
                    env=env,
                    workdir=tmp_path,
                    log=log,
                )
            return
        except PortTaken:
            if attempt == 2:
                raise
