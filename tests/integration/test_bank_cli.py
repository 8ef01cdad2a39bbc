"""`strongroom bank rotate-tokens`, the real command in a subprocess against the test's own
database and keyring: it rotates every item's access token (sandbox provider), shows progress
and a summary, and a second run within the window rotates nothing (it resumes, not restarts).
The interrupted-and-resumed run against Plaid is in test_plaid_bank_accounts.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.service_layer.commands import Caller

STRONGROOM = str(Path(sys.executable).parent / "strongroom")


def _rotate(database_url: str, kms_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRONGROOM_DATABASE_URL": database_url, "STRONGROOM_KMS_URL": kms_url}
    return subprocess.run(
        [STRONGROOM, "bank", "rotate-tokens", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _tokens(container: Container) -> dict[str, str]:
    async with container.uow.reading() as repo:
        rows = (await repo.conn.execute(select(t.bank_items))).all()
    return {r.id: r.access_token.encode() for r in rows}


# SQLite only: the command's parsing and output do not depend on the store; the service under
# it runs on both in test_plaid_bank_accounts.py.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_rotate_tokens_rotates_every_item_once_and_a_rerun_resumes(
    database_url: str, kms_url: str, container: Container
) -> None:
    merchant = await container.merchants.create_merchant("Acme")
    caller = Caller(merchant_id=merchant.id, livemode=False)
    for n in range(3):
        await container.bank_accounts.link(caller, f"public-sandbox-instant-{n}")
    before = await _tokens(container)

    shown = _rotate(database_url, kms_url)
    assert shown.returncode == 0, shown.stderr
    assert "Rotated 3 bank item token(s) of 3." in shown.stdout
    after = await _tokens(container)
    assert all(after[item] != before[item] for item in before), "every sealed token changed"

    again = _rotate(database_url, kms_url, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"total": 3, "rotated": 0, "failed": {}}
    assert await _tokens(container) == after

    forced = _rotate(database_url, kms_url, "--not-since", "0", "--json")
    assert json.loads(forced.stdout)["rotated"] == 3
