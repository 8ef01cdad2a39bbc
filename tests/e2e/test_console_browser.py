"""The operators' console in a real browser (Debian's chromium, driven by Playwright) against a
real `strongroom serve`: the first owner, made with the CLI, signs in with a password, sets up
TOTP from the secret the page shows, signs out, and signs in again with a code from it. The
browser keeps the session cookie itself (`__Host-`, Secure: chromium treats
http://localhost as a secure context)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Browser, expect

from tests.e2e.server import PortTaken, cli, cli_json, free_port, server_env, serving

PASSWORD = "Gl4cier-kettle-Orbit-77"
EMAIL = "owner@console.example"
KEY_EMAIL = "keys@console.example"


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("console")
    env = server_env(STRONGROOM_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'strongroom.db'}")
    cli("db", "upgrade", env=env, cwd=workdir)
    merchant = cli_json("merchants", "create", "--name", "Console", env=env, cwd=workdir)
    for email in (EMAIL, KEY_EMAIL):
        cli(
            "operators", "create", "--merchant", merchant["id"], "--email", email,
            env=env, cwd=workdir, stdin=f"{PASSWORD}\n{PASSWORD}\n",
        )  # fmt: skip
    for attempt in range(3):
        port = free_port()
        base = f"http://localhost:{port}"
        env |= {"STRONGROOM_PUBLIC_URL": base}
        try:
            with serving(port, env=env, cwd=workdir, log=workdir / "server.log"):
                yield base
            break
        except PortTaken:
            if attempt == 2:
                raise


async def test_sign_in_enrol_totp_sign_out_and_sign_in_with_a_code(
    browser: Browser, origin: str
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{origin}/console/sign-in")
    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()

    await expect(page).to_have_title(re.compile("Set up your second factor"))
    await expect(page.locator("#qr svg")).to_be_visible()
    secret = (await page.locator("#totp-secret").text_content() or "").strip()
    totp = pyotp.TOTP(secret)
    await page.get_by_label("Code").fill(totp.now())
    await page.get_by_role("button", name="Turn on").click()
    await expect(page.locator("#recovery-codes li")).to_have_count(10)

    [cookie] = await context.cookies()
    assert cookie["name"] == "__Host-strongroom_session"
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (True, True, "Strict")
    assert cookie["path"] == "/"

    await page.get_by_role("link", name="Continue to the console").click()
    await expect(page.locator("#who")).to_have_text(f"Signed in as {EMAIL} (owner).")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{origin}/console/sign-in")
    assert await context.cookies() == []

    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_title(re.compile("Second factor"))
    # The enrolment used the current step's code: wait for the next one, as a person would.
    code = totp.at(_next_step_time(totp))
    await page.get_by_label(re.compile("Code from your authenticator")).fill(code)
    await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("#who")).to_have_text(f"Signed in as {EMAIL} (owner).")
    await context.close()


async def test_a_security_key_stands_in_for_the_code(browser: Browser, origin: str) -> None:
    """WebAuthn with chromium's virtual authenticator (CDP WebAuthn domain), a CTAP2 key that
    approves every request: added from the console, then used instead of a TOTP code."""
    context = await browser.new_context()
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": False,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    await page.goto(f"{origin}/console/sign-in")
    await page.get_by_label("Email").fill(KEY_EMAIL)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    secret = (await page.locator("#totp-secret").text_content() or "").strip()
    await page.get_by_label("Code").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Turn on").click()
    await page.get_by_role("link", name="Continue to the console").click()

    await page.get_by_role("link", name="Security keys").click()
    await expect(page.locator("#key-count")).to_have_text("Security keys: 0.")
    await page.get_by_role("button", name="Add a security key").click()
    await expect(page.locator("#key-count")).to_have_text("Security keys: 1.")
    held = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": added["authenticatorId"]})
    [credential] = held["credentials"]
    assert credential["rpId"] == "localhost"

    await page.goto(f"{origin}/console")
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("Email").fill(KEY_EMAIL)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Use a security key").click()
    await expect(page.locator("#who")).to_have_text(f"Signed in as {KEY_EMAIL} (owner).")
    await context.close()


def _next_step_time(totp: pyotp.TOTP) -> float:
    """The next 30 s step's start: its code is valid now (one step of drift is allowed)."""
    import time

    return (int(time.time()) // totp.interval + 1) * totp.interval
