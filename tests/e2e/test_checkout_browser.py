"""The demo checkout in a real browser (Debian's chromium, driven by Playwright) against a real
`strongroom serve` process: the page at http://localhost:PORT embeds the sandbox's hosted
fields from http://127.0.0.1:PORT (the same server, another origin), the test types a card
into the fields, and the page shows the outcome: a payment that succeeds, one that passes
through the 3-D Secure challenge, and a decline. Throughout, the merchant's page never holds
the card number: none of its requests carries it, and its script cannot read the fields.

One server (and one database) serves the module's tests, on SQLite and on PostgreSQL; its
database and log are scanned for card numbers when it stops."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, Route, expect

from tests.e2e.server import PortTaken, cli, cli_json, free_port, server_env, serving
from tests.leak_scan import scan_directory
from tests.support import asyncpg_url, pg_available, pg_database, service_missing

PAGE_HOST = "localhost"  # the merchant's page (public_url)
FIELDS_HOST = "127.0.0.1"  # the hosted fields (tokenization_url): the server's own address
AMOUNT = 2000  # 20.00 USD, the demo's default


@dataclass(frozen=True)
class CheckoutServer:
    page_origin: str
    fields_origin: str
    publishable_key: str
    secret_key: str

    @property
    def checkout_url(self) -> str:
        return f"{self.page_origin}/demo/checkout?{urlencode({'key': self.publishable_key})}"

    def api(self) -> httpx.AsyncClient:
        """The merchant's server's view: the API with the secret key."""
        return httpx.AsyncClient(
            base_url=self.fields_origin,
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=30.0,
        )


@contextlib.contextmanager
def _database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'strongroom.db'}"
        return
    reason = pg_available()
    if reason is not None:
        service_missing("PostgreSQL at 127.0.0.1:5432", reason)
    with pg_database("strongroom_e2e") as name:
        yield asyncpg_url(name)


# SQLite only: what the browser sees does not depend on the store, and the payment path under
# it runs on both stores in the integration tests.
@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CheckoutServer]:
    """`strongroom serve` with its pages on one origin and the hosted fields on another."""
    workdir = tmp_path_factory.mktemp(f"checkout_{request.param}")
    with _database(request.param, workdir) as database_url:
        env = server_env(STRONGROOM_DATABASE_URL=database_url)
        cli("db", "upgrade", env=env, cwd=workdir)
        merchant = cli_json("merchants", "create", "--name", "Checkout", env=env, cwd=workdir)
        for attempt in range(3):
            port = free_port()
            env |= {
                "STRONGROOM_PUBLIC_URL": f"http://{PAGE_HOST}:{port}",
                "STRONGROOM_TOKENIZATION_URL": f"http://{FIELDS_HOST}:{port}",
            }
            try:
                with serving(port, env=env, cwd=workdir, log=workdir / "server.log"):
                    yield CheckoutServer(
                        page_origin=f"http://{PAGE_HOST}:{port}",
                        fields_origin=f"http://{FIELDS_HOST}:{port}",
                        publishable_key=merchant["publishable_key"],
                        secret_key=merchant["secret_key"],
                    )
                break
            except PortTaken:
                if attempt == 2:
                    raise
    # This directory is the module's, not a test's, so the suite's leak scan would miss it.
    findings = scan_directory(workdir, "checkout server")
    assert not findings, [str(f) for f in findings]


@dataclass
class Watched:
    """A browser page, with every request any of its frames made."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # URLs that would have left the machine


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context()
    page = await context.new_page()
    seen = Watched(page)

    async def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in (PAGE_HOST, FIELDS_HOST):
            await route.continue_()
        else:
            seen.refused.append(route.request.url)
            await route.abort()

    await context.route("**/*", local_only)

    def record(request: Request) -> None:
        seen.requests.append(request)

    page.on("request", record)
    try:
        yield seen
    finally:
        await context.close()
    assert seen.refused == []  # no external scripts, fonts or anything else


async def pay_with(watched: Watched, server: CheckoutServer, number: str) -> None:
    """Open the checkout, type the card into the hosted fields as a customer would, and pay."""
    page = watched.page
    await page.goto(server.checkout_url)
    await expect(page.locator("#amount")).to_have_text("20.00 USD")
    await expect(page.locator("#pay")).to_be_enabled()  # the fields said they are ready
    fields = page.frame_locator("#card-frame")
    await fields.locator("#card-number").press_sequentially(number)
    await fields.locator("#card-expiry").press_sequentially("12 / 34")
    await fields.locator("#card-cvc").press_sequentially("123")
    await page.locator("#pay").click()


async def assert_page_never_saw(watched: Watched, server: CheckoutServer, number: str) -> None:
    digits = number.replace(" ", "")
    page = watched.page

    # The number went to the tokenization origin, from the fields' frame, and nowhere else.
    def carries(request: Request) -> bool:
        text = request.url + (request.post_data or "")
        return digits in text or number in text

    carrying = [r for r in watched.requests if carries(r)]
    assert [(r.method, r.url) for r in carrying] == [("POST", f"{server.fields_origin}/v1/tokens")]
    assert carrying[0].frame != page.main_frame
    page_requests = [r for r in watched.requests if r.url.startswith(server.page_origin)]
    assert any(r.url.endswith("/demo/checkout/pay") for r in page_requests)

    # The page's own script cannot reach into the fields: the browser forbids it.
    reach = await page.evaluate(
        """() => {
            const frame = document.getElementById("card-frame");
            try {
                return "read: " + frame.contentWindow.document.getElementById("card-number").value;
            } catch (error) {
                return "blocked: " + error.name;
            }
        }"""
    )
    assert reach == "blocked: SecurityError"


async def latest_intent(server: CheckoutServer) -> dict[str, Any]:
    async with server.api() as api:
        page = (await api.get("/v1/payment_intents", params={"limit": 1})).json()
    intent: dict[str, Any] = page["data"][0]
    return intent


async def test_a_visa_card_pays(server: CheckoutServer, watched: Watched) -> None:
    await pay_with(watched, server, "4242 4242 4242 4242")
    await expect(watched.page.locator("#result")).to_have_text("Payment succeeded")
    await assert_page_never_saw(watched, server, "4242 4242 4242 4242")

    intent = await latest_intent(server)
    assert (intent["status"], intent["amount_received"], intent["currency"]) == (
        "succeeded",
        AMOUNT,
        "usd",
    )
    assert re.fullmatch(r"tok_[0-9A-Za-z]{24}", intent["payment_method"])


async def test_a_card_that_needs_3d_secure_pays_after_the_challenge(
    server: CheckoutServer, watched: Watched
) -> None:
    page = watched.page
    await pay_with(watched, server, "4000 0025 0000 3155")
    await expect(page).to_have_title("Sandbox 3-D Secure")
    assert page.url.startswith(f"{server.page_origin}/sandbox/3ds/")
    await page.locator("#complete").click()
    await expect(page.locator("body")).to_contain_text("Authentication completed.")

    # Back to the merchant: past the answered challenge, to the checkout, which confirms again.
    await page.go_back()
    await page.go_back()
    assert urlsplit(page.url).path == "/demo/checkout"
    await expect(page.locator("#result")).to_have_text("Payment succeeded")
    await expect(page).to_have_url(server.checkout_url)  # the intent is forgotten once paid
    await assert_page_never_saw(watched, server, "4000 0025 0000 3155")

    intent = await latest_intent(server)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", AMOUNT)
    assert intent["next_action"] is None


async def test_a_declined_card_shows_the_decline(server: CheckoutServer, watched: Watched) -> None:
    await pay_with(watched, server, "4000 0000 0000 0002")
    await expect(watched.page.locator("#result")).to_have_text("Your card was declined.")
    await expect(watched.page.locator("#pay")).to_be_enabled()  # the customer may try again
    await assert_page_never_saw(watched, server, "4000 0000 0000 0002")

    intent = await latest_intent(server)
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["decline_code"] == "generic_decline"
