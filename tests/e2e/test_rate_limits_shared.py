"""Three `strongroom serve` processes sharing one Redis (127.0.0.1:6379) and one PostgreSQL
database: with a limit of N reads a minute for one key, N + 50 concurrent requests spread over
the three are answered with exactly N 200s and 50 429s, each 429 with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest

from strongroom.adapters.ratelimit import storage_from_url
from tests.e2e.server import cli, cli_json, free_port, server_env, serving
from tests.support import asyncpg_url, pg_available, pg_database, service_missing, unique_name

REDIS = "redis://127.0.0.1:6379/0"
LIMIT = 100
EXTRA = 50


async def _get_all(urls: list[str], secret_key: str) -> list[httpx.Response]:
    """LIMIT + EXTRA requests at once, spread evenly over the servers."""
    auth = {"Authorization": f"Bearer {secret_key}"}
    async with httpx.AsyncClient(headers=auth, timeout=30) as http:
        return await asyncio.gather(
            *(http.get(f"{urls[i % 3]}/v1/payment_intents") for i in range(LIMIT + EXTRA))
        )


@pytest.mark.postgres
def test_three_servers_on_one_redis_admit_exactly_the_limit(tmp_path: Path) -> None:
    reason = pg_available()
    if reason is not None:
        service_missing("PostgreSQL at 127.0.0.1:5432", reason)
    prefix = unique_name("strongroom_e2e")
    counters = storage_from_url(REDIS, key_prefix=prefix)
    if not asyncio.run(counters.check()):
        service_missing("Redis at 127.0.0.1:6379", "it does not answer")
    try:
        with pg_database("strongroom_e2e") as name, contextlib.ExitStack() as servers:
            env = server_env(
                STRONGROOM_DATABASE_URL=asyncpg_url(name),
                STRONGROOM_RATELIMIT_URL=REDIS,
                STRONGROOM_RATELIMIT_PREFIX=prefix,
                STRONGROOM_SERVE_WORKER="false",
            )
            cli("db", "upgrade", env=env, cwd=tmp_path)
            merchant = cli_json("merchants", "create", "--name", "Shared", env=env, cwd=tmp_path)
            cli_json(
                "merchants", "rate-limits", merchant["id"], "--reads", f"{LIMIT}/minute",
                env=env, cwd=tmp_path,
            )  # fmt: skip
            urls = [
                servers.enter_context(
                    serving(port, env=env, cwd=tmp_path, log=tmp_path / f"server{i}.log")
                )
                for i, port in enumerate(free_port() for _ in range(3))
            ]
            answers = asyncio.run(_get_all(urls, merchant["secret_key"]))
    finally:
        asyncio.run(storage_from_url(REDIS, key_prefix=prefix).reset())
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == EXTRA
    for answer in answers:
        assert f'"key-reads";q={LIMIT};w=60' in answer.headers.get("ratelimit-policy", "")
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["retry-after"]) <= 60
