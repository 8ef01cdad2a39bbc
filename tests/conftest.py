"""Fixtures: a migrated database per test (SQLite and PostgreSQL), the container wired on it,
a merchant with a secret key, and an HTTP client over the real ASGI app."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from strongroom.adapters.db.migrate import upgrade
from strongroom.bootstrap import Container, bootstrap
from strongroom.entrypoints.api import create_app
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings
from tests.support import (
    FakeClock,
    asyncpg_url,
    pg_available,
    pg_database,
    service_missing,
)

# The acceptance scan: no card number or secret key in clear in any test database or log line.
pytest_plugins = ["tests.leak_scan"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once; each test copies the file (much faster than migrating per test)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that per-test databases are cloned from."""
    reason = pg_available()
    if reason is not None:
        service_missing("PostgreSQL at 127.0.0.1:5432", reason)
    with pg_database("strongroom_tpl") as name:
        upgrade(asyncpg_url(name))
        yield name


def _sqlite_url(template: Path, tmp_path: Path) -> str:
    path = tmp_path / "strongroom.db"
    shutil.copy(template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test, on each engine in turn."""
    if request.param == "sqlite":
        yield _sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    template = request.getfixturevalue("pg_template")
    with pg_database("strongroom_test", template=template) as name:
        yield asyncpg_url(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kms_url(tmp_path: Path) -> str:
    """This test's own local keyring (never ./var/keyring in the checkout)."""
    return f"local:///{tmp_path / 'keyring'}"  # local:////abs/path: an absolute path


@pytest.fixture
def reporting_url(tmp_path: Path) -> str:
    """This test's own reporting store (never ./var/reporting.duckdb in the checkout)."""
    return f"duckdb:///{tmp_path / 'reporting.duckdb'}"


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    """Where this test's emails land (never ./var/mail in the checkout)."""
    return tmp_path / "mail"


@pytest.fixture
def settings(database_url: str, kms_url: str, reporting_url: str, mail_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        env="test",
        db_pool_size=20,
        kms_url=kms_url,
        reporting_url=reporting_url,
        mail_url=f"file://{mail_dir}",
        # Cheap argon2: tests sign in often; the timing test builds its own with the defaults.
        argon2_time_cost=1,
        argon2_memory_kib=8,
        # Tests send requests far faster than any one client should; the rate-limit tests
        # set their own limits.
        ratelimit_per_key={"reads": "100000/second", "writes": "100000/second"},
        ratelimit_per_address={
            c: "100000/second" for c in ("reads", "writes", "login", "webhooks")
        },
    )


@pytest.fixture
async def container(settings: Settings, clock: FakeClock) -> AsyncIterator[Container]:
    built = bootstrap(settings, clock=clock)
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def secret_key(container: Container) -> str:
    merchant = await container.merchants.create_merchant("Acme")
    key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    return key.secret


@pytest.fixture
async def client(container: Container, secret_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over the real app (ASGI, in-process), authenticated as Acme."""
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://strongroom.test",
        headers={"Authorization": f"Bearer {secret_key}"},
    ) as http:
        yield http
