"""/healthz reports readiness: 200 with a database, 503 in the error shape without one."""

from __future__ import annotations

import httpx

from strongroom.bootstrap import bootstrap
from strongroom.entrypoints.api import create_app
from strongroom.settings import Settings


async def test_healthy_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_unavailable_when_the_database_does_not() -> None:
    # Nothing listens on loopback port 1: the connection is refused at once.
    container = bootstrap(Settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none"))
    try:
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/healthz")
    finally:
        await container.aclose()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
