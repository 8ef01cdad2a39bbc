"""An outage of the reporting store touches reports alone: they answer 503 in the error shape
while payments go on (the stores are apart)."""

from __future__ import annotations

import httpx

from strongroom.bootstrap import bootstrap
from strongroom.entrypoints.api import create_app
from strongroom.service_layer.merchants import KeyKind
from strongroom.settings import Settings


async def test_reports_answer_503_while_the_reporting_store_is_down(
    settings: Settings,
) -> None:
    # ClickHouse "on" loopback port 1, where nothing listens: the store is unreachable.
    down = settings.model_copy(update={"reporting_url": "clickhouse://127.0.0.1:1/reports"})
    built = bootstrap(down)
    merchant = await built.merchants.create_merchant("Down")
    key = await built.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    try:
        transport = httpx.ASGITransport(app=create_app(built))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {key.secret}"},
        ) as http:
            response = await http.get("/v1/reports/volume")
            payments = await http.get("/v1/payment_intents")
    finally:
        await built.aclose()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "reporting_unavailable"
    assert payments.status_code == 200  # taking payments never depends on the reporting store
