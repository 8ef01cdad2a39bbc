"""The sandbox's 3-D Secure challenge in a real browser (Debian's chromium, driven by Playwright):
a PaymentIntent that needs authentication sends the customer to a page where they complete or
fail the challenge, and confirming again then succeeds or is declined accordingly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.e2e.server import HOST, LiveServer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
AMOUNT = 4242


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()

    async def local_only(route: Route) -> None:
        # The page must work with nothing but the server: no request leaves 127.0.0.1.
        if urlsplit(route.request.url).hostname == HOST:
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", local_only)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def needs_authentication(http: httpx.AsyncClient, base_url: str) -> tuple[str, str]:
    """A PaymentIntent confirmed with the 3-D Secure test card: its id and challenge URL."""
    response = await http.post(
        "/v1/payment_intents",
        json={
            "amount": AMOUNT,
            "currency": "eur",
            "payment_method": "tok_threeDSecureRequired",
            "confirm": True,
        },
    )
    assert response.status_code == 200, response.text
    intent = response.json()
    assert intent["status"] == "requires_action"
    assert intent["amount_received"] == 0
    assert intent["next_action"]["type"] == "redirect_to_url"
    url: str = intent["next_action"]["redirect_to_url"]["url"]
    assert url.startswith(f"{base_url}/sandbox/3ds/"), url
    return intent["id"], url


async def open_challenge(page: Page, url: str, tmp_path: Path) -> None:
    response = await page.goto(url)
    assert response is not None
    assert response.status == 200
    await expect(page).to_have_title("Sandbox 3-D Secure")
    await expect(page.get_by_role("heading")).to_have_text("3-D Secure test challenge")
    await expect(page.locator("body")).to_contain_text(f"for {AMOUNT} EUR")
    await expect(page.locator("#complete")).to_be_visible()
    await expect(page.locator("#fail")).to_be_visible()

    shot = tmp_path / "challenge.png"
    await page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert len(data) > len(PNG_SIGNATURE)
    assert data.startswith(PNG_SIGNATURE)


async def answered_page_is_gone(page: Page, url: str) -> None:
    """A challenge is answered once: going back to it finds nothing to answer."""
    response = await page.goto(url)
    assert response is not None
    assert response.status == 404
    await expect(page.locator("body")).to_contain_text("There is no pending challenge here.")
    await expect(page.locator("#complete")).to_have_count(0)


# SQLite only: the challenge pages do not depend on the store (integration tests run both).
@pytest.mark.parametrize("e2e_database_url", ["sqlite"], indirect=True)
async def test_completed_challenge_then_confirm_succeeds(
    live_server: LiveServer, page: Page, tmp_path: Path
) -> None:
    async with live_server.async_client() as http:
        intent_id, url = await needs_authentication(http, live_server.base_url)

        # Before the customer answers, confirming again still needs the customer.
        pending = await http.post(f"/v1/payment_intents/{intent_id}/confirm")
        assert pending.status_code == 200, pending.text
        assert pending.json()["status"] == "requires_action"

        await open_challenge(page, url, tmp_path)
        await page.click("#complete")
        await expect(page.locator("body")).to_contain_text(
            "Authentication completed. You may return to the merchant."
        )
        await answered_page_is_gone(page, url)

        confirmed = await http.post(f"/v1/payment_intents/{intent_id}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        body: dict[str, Any] = confirmed.json()
        assert body["id"] == intent_id
        assert body["status"] == "succeeded"
        assert body["amount_received"] == AMOUNT
        assert body["next_action"] is None

        fetched = (await http.get(f"/v1/payment_intents/{intent_id}")).json()
    assert fetched == body

    charges = live_server.cli_json("sandbox", "charges")
    assert [(c["id"], c["status"], c["amount_captured"]) for c in charges] == [
        (body["latest_charge"], "captured", AMOUNT)
    ]


# SQLite only: the challenge pages do not depend on the store (integration tests run both).
@pytest.mark.parametrize("e2e_database_url", ["sqlite"], indirect=True)
async def test_failed_challenge_then_confirm_is_declined(
    live_server: LiveServer, page: Page, tmp_path: Path
) -> None:
    async with live_server.async_client() as http:
        intent_id, url = await needs_authentication(http, live_server.base_url)

        await open_challenge(page, url, tmp_path)
        await page.click("#fail")
        await expect(page.locator("body")).to_contain_text(
            "Authentication failed. You may return to the merchant."
        )
        await answered_page_is_gone(page, url)

        declined = await http.post(f"/v1/payment_intents/{intent_id}/confirm")
        assert declined.status_code == 402, declined.text
        error = declined.json()["error"]
        assert error["type"] == "card_error"
        assert error["code"] == "payment_intent_authentication_failure"
        assert error["payment_intent"] == intent_id

        fetched = await http.get(f"/v1/payment_intents/{intent_id}")
    assert fetched.status_code == 200
    intent = fetched.json()
    assert intent["status"] == "requires_payment_method"
    assert intent["amount_received"] == 0
    assert intent["next_action"] is None
    assert intent["last_payment_error"]["code"] == "payment_intent_authentication_failure"

    charges = live_server.cli_json("sandbox", "charges")
    assert [(c["status"], c["amount_captured"]) for c in charges] == [("failed", 0)]
