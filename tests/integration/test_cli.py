"""The `strongroom` command, run as a real subprocess against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Container
from tests.support import FakeClock

STRONGROOM = str(Path(sys.executable).with_name("strongroom"))


def cli(
    database_url: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "STRONGROOM_DATABASE_URL": database_url, **(env or {})}
    return subprocess.run(
        [STRONGROOM, *args],
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def cli_json(database_url: str, *args: str) -> Any:
    result = cli(database_url, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# One store: the command's parsing and output do not depend on it; the service layer under it
# runs on both stores in the other tests, and each run starts processes.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_merchant_keys_and_revocation(
    database_url: str, container: Container, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = cli_json(database_url, "merchants", "create", "--name", "Cli Co")
    assert created["id"].startswith("acct_")
    assert created["secret_key"].startswith("sk_test_")
    assert created["publishable_key"].startswith("pk_test_")

    headers = {"Authorization": f"Bearer {created['secret_key']}"}
    assert (await client.get("/v1/payment_intents", headers=headers)).status_code == 200

    extra = cli_json(database_url, "keys", "create", "--merchant", created["id"], "--live")
    assert extra["secret"].startswith("sk_live_")
    live = {"Authorization": f"Bearer {extra['secret']}"}
    made = await client.post("/v1/customers", headers=live)
    assert made.json()["livemode"] is True

    revoked = cli_json(database_url, "keys", "revoke", extra["id"])
    assert revoked == {"id": extra["id"], "revoked": True}
    # Revoked in another process: this one stops trusting its cached lookup within the TTL.
    clock.advance(seconds=container.settings.api_key_cache_seconds)
    assert (await client.get("/v1/payment_intents", headers=live)).status_code == 401

    again = cli(database_url, "keys", "revoke", extra["id"])
    assert again.returncode != 0
    assert "No such active key" in again.stderr


# One store: the command's parsing and output do not depend on it; the service layer under it
# runs on both stores in the other tests, and each run starts processes.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_secrets_are_stored_only_as_keyed_hashes(
    database_url: str, container: Container
) -> None:
    created = cli_json(database_url, "merchants", "create", "--name", "Hash Co")
    async with container.engines.read.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT * FROM api_keys")).all()
    dumped = "\n".join(str(tuple(row)) for row in rows)
    assert created["secret_key"] not in dumped
    assert created["secret_key"][8:] not in dumped
    assert container.merchants.key_hash(created["secret_key"]) in dumped


# One store: the command's parsing and output do not depend on it; the service layer under it
# runs on both stores in the other tests, and each run starts processes.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sandbox_charges_lists_what_the_gateway_recorded(
    database_url: str, client: httpx.AsyncClient
) -> None:
    await client.post(
        "/v1/payment_intents",
        json={"amount": 1234, "currency": "usd", "payment_method": "tok_visa", "confirm": True},
    )
    charges = cli_json(database_url, "sandbox", "charges")
    assert [(c["amount"], c["status"], c["payment_method"]) for c in charges] == [
        (1234, "captured", "tok_visa")
    ]


def test_db_upgrade_and_demo_merchant_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    assert cli_json(url, "db", "upgrade") == {"upgraded": True}
    first = cli_json(url, "merchants", "demo")
    second = cli_json(url, "merchants", "demo")
    assert first["created"] is True
    assert first["secret_key"].startswith("sk_test_")
    assert second == {"id": first["id"], "name": "Demo merchant", "created": False}
    assert "secret_key" not in second


def test_the_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/worker.db"
    cli(url, "db", "upgrade")
    env = {**os.environ, "STRONGROOM_DATABASE_URL": url}
    proc = subprocess.Popen([STRONGROOM, "worker"], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        started = proc.stderr.readline()  # blocks until the signal handlers are installed
        assert "worker started" in started, started
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "worker stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
