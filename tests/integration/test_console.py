"""The operators' console over HTTP (the real app, in-process, on SQLite and PostgreSQL): sign
in with a password and TOTP, the session cookie's flags, CSRF and Origin checks, idle and
absolute limits, rotation on the second factor and on a password change, and sessions listed
and ended. The cookie is carried by hand: it is `Secure`, which an http:// test client would
not send."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import httpx
import pyotp
import pytest
from sqlalchemy import text

from strongroom.bootstrap import Container
from strongroom.domain.errors import AuthenticationError
from strongroom.entrypoints.api.app import create_app
from strongroom.entrypoints.api.pages import origin_of
from strongroom.entrypoints.api.routes._console import COOKIE
from strongroom.service_layer.commands import Caller, CreateCustomer, CreatePaymentIntent
from strongroom.service_layer.idempotency import Replayed
from strongroom.service_layer.operators import Operator
from tests.integration.test_tenant_isolation import routes
from tests.support import FakeClock

PASSWORD = "Gl4cier-kettle-Orbit-77"


@dataclass
class Console:
    """One browser's view: its cookie, and the console's origin for the Origin header."""

    http: httpx.AsyncClient
    origin: str
    token: str | None = None
    cookies_set: list[str] = field(default_factory=list)

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            self.cookies_set.append(header)
            name, _, rest = header.partition("=")
            if name == COOKIE:
                value = rest.split(";", 1)[0]
                self.token = value.strip('"') or None

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.token}"} if self.token else {}

    async def get(self, path: str) -> httpx.Response:
        response = await self.http.get(path, headers=self._headers())
        self._remember(response)
        return response

    async def post(
        self, path: str, data: dict[str, str], *, origin: str | None = None, csrf: bool = True
    ) -> httpx.Response:
        headers = self._headers() | {"Origin": origin or self.origin}
        if csrf and self.token and "csrf_token" not in data:
            page = await self.http.get(_page_for(path), headers=self._headers())
            data = data | {"csrf_token": csrf_in(page.text)}
        response = await self.http.post(path, data=data, headers=headers)
        self._remember(response)
        return response


def _page_for(path: str) -> str:
    return {
        "/console/second-factor": "/console/second-factor",
        "/console/totp": "/console/second-factor",
        "/console/password": "/console/password",
    }.get(path, "/console/operators" if path.startswith("/console/operators") else "/console")


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page carries a CSRF token"
    return found.group(1)


@pytest.fixture
async def console(container: Container) -> AsyncIterator[Console]:
    transport = httpx.ASGITransport(app=create_app(container))
    base = container.settings.public_url
    async with httpx.AsyncClient(transport=transport, base_url=base) as http:
        yield Console(http, origin_of(base))


@pytest.fixture
async def operator(container: Container) -> Operator:
    merchant = await container.merchants.create_merchant("Console Ltd")
    return await container.operators.create(merchant.id, "con@example.com", "owner", PASSWORD)


async def enrol(console: Console, clock: FakeClock) -> str:
    """Sign in for the first time and turn TOTP on; returns the TOTP secret."""
    signed = await console.post(
        "/console/sign-in", {"email": "con@example.com", "password": PASSWORD}
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/totp"
    page = await console.get("/console/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret, page.text
    before = console.token
    done = await console.post(
        "/console/totp",
        {"code": pyotp.TOTP(secret.group(1)).at(clock.now()), "csrf_token": csrf_in(page.text)},
    )
    assert done.status_code == 200, done.text
    assert len(re.findall(r"<li>[a-z2-9]{5}-[a-z2-9]{5}</li>", done.text)) == 10
    assert console.token != before, "a new session id after the second factor"
    return secret.group(1)


async def sign_in(console: Console, clock: FakeClock, secret: str) -> httpx.Response:
    await console.post("/console/sign-in", {"email": "con@example.com", "password": PASSWORD})
    clock.advance(seconds=30)  # a fresh TOTP step
    return await console.post(
        "/console/second-factor", {"code": pyotp.TOTP(secret).at(clock.now())}
    )


async def test_sign_in_with_password_and_totp_and_the_cookie_flags(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    home = await console.get("/console")
    assert home.status_code == 200
    assert "Signed in as con@example.com (owner)" in home.text

    await console.post("/console/sign-out", {})
    assert (await console.get("/console")).status_code == 401
    console.cookies_set.clear()
    answer = await sign_in(console, clock, secret)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    assert (await console.get("/console")).status_code == 200

    cookie = console.cookies_set[-1]
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0].startswith(f"{COOKIE}=")
    flags = {p.split("=", 1)[0].lower(): p.split("=", 1)[-1] for p in parts[1:]}
    assert set(flags) == {"httponly", "path", "samesite", "secure"}
    assert flags["path"] == "/"
    assert flags["samesite"].lower() == "strict"


async def test_the_password_alone_reaches_only_the_second_factor(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    await console.post("/console/sign-out", {})
    await console.post("/console/sign-in", {"email": "con@example.com", "password": PASSWORD})
    assert (await console.get("/console")).status_code == 401
    wrong = await console.post("/console/second-factor", {"code": "000000"})
    assert wrong.status_code == 401
    assert "The code is not correct." in wrong.text
    clock.advance(seconds=30)
    right = await console.post(
        "/console/second-factor", {"code": pyotp.TOTP(secret).at(clock.now())}
    )
    assert right.status_code == 303


async def test_a_wrong_password_gets_the_same_page_as_an_unknown_address(
    console: Console, operator: Operator
) -> None:
    pages = []
    for email, password in (("con@example.com", "Wrong-password-123"), ("no@x.example", PASSWORD)):
        answer = await console.post("/console/sign-in", {"email": email, "password": password})
        pages.append((answer.status_code, answer.text))
    assert pages[0] == pages[1]
    assert pages[0][0] == 401


async def test_csrf_and_origin_are_checked_on_every_post(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    await enrol(console, clock)
    no_token = await console.post("/console/sign-out", {}, csrf=False)
    assert no_token.status_code == 403
    forged = await console.post("/console/sign-out", {"csrf_token": "forged"})
    assert forged.status_code == 403
    elsewhere = await console.post("/console/sign-out", {}, origin="https://evil.example")
    assert elsewhere.status_code == 403
    assert (await console.get("/console")).status_code == 200, "still signed in"
    login_csrf = await console.post(
        "/console/sign-in",
        {"email": "con@example.com", "password": PASSWORD},
        origin="https://evil.example",
    )
    assert login_csrf.status_code == 403


async def test_idle_and_absolute_limits(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    clock.advance(minutes=15, seconds=1)
    assert (await console.get("/console")).status_code == 401

    await sign_in(console, clock, secret)
    for _ in range(12 * 4):  # busy every 15 minutes, for 12 hours
        clock.advance(minutes=14)
        await console.get("/console")
        clock.advance(minutes=1)
    assert (await console.get("/console")).status_code == 401


async def test_a_password_change_rotates_the_session_and_ends_the_others(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    other = Console(console.http, console.origin)
    await sign_in(other, clock, secret)
    old = console.token

    changed = await console.post(
        "/console/password", {"current": PASSWORD, "new": "Brand-new-Passw0rd-a"}
    )
    assert changed.status_code == 303
    assert console.token != old
    assert (await console.get("/console")).status_code == 200
    stale = Console(console.http, console.origin, token=old)
    assert (await stale.get("/console")).status_code == 401
    assert (await other.get("/console")).status_code == 401


async def test_an_operator_ends_another_session(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    other = Console(console.http, console.origin)
    await sign_in(other, clock, secret)
    home = await console.get("/console")
    ids = re.findall(r"/console/sessions/(ses_[A-Za-z0-9]+)/revoke", home.text)
    assert len(ids) == 1, "the other session, not this one"
    ended = await console.post(f"/console/sessions/{ids[0]}/revoke", {})
    assert ended.status_code == 303
    assert (await other.get("/console")).status_code == 401
    assert (await console.get("/console")).status_code == 200


async def test_pages_forbid_scripts_and_framing(console: Console) -> None:
    page = await console.get("/console/sign-in")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"


def link_in(mail_dir: Path, to: str) -> str:
    """The invitation link in the newest email to `to` the development mailer wrote."""
    messages = [
        message_from_bytes(p.read_bytes(), policy=default)
        for p in sorted(mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    ]
    mine = [m for m in messages if m["To"] == to]
    assert mine, f"no email to {to}"
    body = mine[-1].get_body(("plain",))
    assert body is not None
    found = re.search(r"https?://\S+/console/invitations/(\S+)", body.get_content())
    assert found
    return f"/console/invitations/{found.group(1)}"


async def test_an_owner_invites_and_the_link_works_once_for_24_hours(
    console: Console,
    container: Container,
    operator: Operator,
    clock: FakeClock,
    mail_dir: Path,
) -> None:
    await enrol(console, clock)
    sent = await console.post(
        "/console/operators/invite", {"email": "New.Hire@example.com", "role": "finance"}
    )
    assert sent.status_code == 303
    link = link_in(mail_dir, "new.hire@example.com")

    guest = Console(console.http, console.origin)
    page = await guest.get(link)
    assert page.status_code == 200
    assert "invited as finance" in page.text
    weak = await guest.post(link, {"password": "password1234"})
    assert weak.status_code == 400, "a refused password leaves the link usable"
    made = await guest.post(link, {"password": "Finance-passw0rd-ok"})
    assert made.status_code == 303
    assert (await guest.post(link, {"password": "Another-passw0rd-ok"})).status_code == 404
    hired = await container.operators.sign_in("new.hire@example.com", "Finance-passw0rd-ok")
    assert (hired.role.value, hired.merchant_id) == ("finance", operator.merchant_id)

    await console.post("/console/operators/invite", {"email": "late@example.com", "role": "viewer"})
    late = link_in(mail_dir, "late@example.com")
    clock.advance(hours=24)
    assert (await guest.get(late)).status_code == 404


async def test_only_an_owner_manages_operators_and_a_role_change_ends_sessions(
    console: Console,
    container: Container,
    operator: Operator,
    clock: FakeClock,
) -> None:
    owner_secret = await enrol(console, clock)
    clerk = await container.operators.create(
        operator.merchant_id, "clerk@example.com", "support", PASSWORD
    )
    clerk_console = await _enrolled(console, clerk.email, clock)
    assert (await clerk_console.get("/console/operators")).status_code == 403

    changed = await console.post(f"/console/operators/{clerk.id}/role", {"role": "admin"})
    assert changed.status_code == 303
    assert (await container.operators.get(clerk.id)).role.value == "admin"
    assert (await clerk_console.get("/console")).status_code == 401, "a new session for a new role"

    for _ in range(10):
        with pytest.raises(AuthenticationError):
            await container.operators.sign_in(clerk.email, "Wrong-passw0rd-xyz")
    listing = await console.get("/console/operators")
    assert f"/console/operators/{clerk.id}/unlock" in listing.text
    assert (await console.post(f"/console/operators/{clerk.id}/unlock", {})).status_code == 303
    assert (await container.operators.sign_in(clerk.email, PASSWORD)).id == clerk.id
    assert owner_secret


async def test_app_tokens_need_a_recent_second_factor_and_rotate_at_oauth_token(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    clock.advance(minutes=6)  # the second factor is now too old for a sensitive act
    await console.get("/console")
    stale = await console.post("/console/app-tokens", {})
    assert stale.status_code == 401
    assert 'name="next" value="/console/app-tokens"' in stale.text
    clock.advance(seconds=30)
    stepped = await console.post(
        "/console/second-factor",
        {"code": pyotp.TOTP(secret).at(clock.now()), "next": "/console/app-tokens"},
    )
    assert stepped.headers["location"] == "/console/app-tokens"
    made = await console.post("/console/app-tokens", {})
    assert made.status_code == 200
    assert made.headers["cache-control"] == "no-store"
    access = re.search(r'id="access-token">([^<]+)<', made.text)
    refresh = re.search(r'id="refresh-token">([^<]+)<', made.text)
    assert access
    assert refresh

    api = console.http
    me = await api.get("/v1/operator", headers={"Authorization": f"Bearer {access.group(1)}"})
    assert me.json()["email"] == "con@example.com"
    rotated = await api.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh.group(1)}
    )
    assert rotated.status_code == 200, rotated.text
    pair = rotated.json()
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 600
    reused = await api.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh.group(1)}
    )
    assert reused.status_code == 400
    assert reused.json()["error"]["code"] == "invalid_grant"
    after = await api.get(
        "/v1/operator", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert after.status_code == 401, "the family's newer tokens are revoked too"
    wrong_grant = await api.post("/oauth/token", data={"grant_type": "password"})
    assert wrong_grant.json()["error"]["code"] == "unsupported_grant_type"


async def test_a_step_up_never_redirects_off_the_console(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    clock.advance(seconds=30)
    answer = await console.post(
        "/console/second-factor",
        {"code": pyotp.TOTP(secret).at(clock.now()), "next": "https://evil.example/console"},
    )
    assert answer.headers["location"] == "/console"


async def test_security_key_calls_need_csrf_and_answer_each_challenge_once(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    """The refusals; the ceremonies themselves run in chromium with a virtual authenticator
    (tests/e2e/test_console_browser.py)."""
    await enrol(console, clock)
    page = await console.get("/console/security-keys")
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    csrf = re.search(r'data-csrf="([^"]+)"', page.text)
    assert csrf
    headers = {"Cookie": f"{COOKIE}={console.token}", "Origin": console.origin}
    options = "/console/webauthn/register/options"

    assert (await console.http.post(options, headers=headers, json={})).status_code == 403
    answer = await console.http.post(
        options, headers=headers | {"X-CSRF-Token": csrf.group(1)}, json={}
    )
    assert answer.status_code == 200
    challenge = answer.json()["challenge"]
    assert answer.json()["rp"]["id"] == "127.0.0.1"

    forged = await console.http.post(
        "/console/webauthn/register",
        headers=headers | {"X-CSRF-Token": csrf.group(1)},
        json={"id": "x", "rawId": "x", "type": "public-key", "response": {}},
    )
    assert forged.status_code == 400
    again = await console.http.post(
        "/console/webauthn/register",
        headers=headers | {"X-CSRF-Token": csrf.group(1)},
        json={"id": "x", "rawId": "x", "type": "public-key", "response": {}},
    )
    assert again.status_code == 400, "the challenge was taken by the first answer"
    assert await container.webauthn.credential_count(operator.id) == 0
    assert challenge not in (await console.get("/console")).text


async def test_an_owner_creates_an_api_key_after_a_recent_second_factor(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    made = await console.post("/console/api-keys", {"kind": "secret", "mode": "test"})
    assert made.status_code == 200
    key = re.search(r'id="api-key">(sk_test_[^<]+)<', made.text)
    assert key
    assert (await container.merchants.authenticate(key.group(1))).caller.merchant_id == (
        operator.merchant_id
    )
    clock.advance(minutes=5, seconds=1)
    await console.get("/console")
    stale = await console.post("/console/api-keys", {"kind": "secret", "mode": "test"})
    assert stale.status_code == 401, "more than 5 minutes since the second factor"
    clock.advance(seconds=30)
    await console.post(
        "/console/second-factor",
        {"code": pyotp.TOTP(secret).at(clock.now()), "next": "/console/api-keys"},
    )
    again = await console.post("/console/api-keys", {"kind": "publishable", "mode": "live"})
    assert "pk_live_" in again.text

    async with container.engines.write.connect() as conn:
        actors = (
            await conn.execute(
                text("SELECT actor_type, actor_id FROM audit_events WHERE event_type = :t"),
                {"t": "cli:api_key:create"},
            )
        ).all()
    assert [tuple(a) for a in actors] == [("user", operator.id)] * 2


async def test_a_password_change_is_no_second_factor(
    console: Console, operator: Operator, clock: FakeClock
) -> None:
    """The new session after a password change keeps the sign-in's second-factor time: an
    old one does not become fresh for sensitive acts."""
    await enrol(console, clock)
    clock.advance(minutes=6)
    changed = await console.post(
        "/console/password", {"current": PASSWORD, "new": "Brand-new-Passw0rd-a"}
    )
    assert changed.status_code == 303
    stale = await console.post("/console/api-keys", {"kind": "secret", "mode": "test"})
    assert stale.status_code == 401


async def _stale(console: Console, clock: FakeClock) -> None:
    """Six minutes on: the session lives, its second factor is too old for sensitive acts."""
    clock.advance(minutes=6)
    await console.get("/console")


async def _step_up(console: Console, clock: FakeClock, secret: str, then: str) -> None:
    clock.advance(seconds=30)
    answer = await console.post(
        "/console/second-factor", {"code": pyotp.TOTP(secret).at(clock.now()), "next": then}
    )
    assert answer.headers["location"] == then


async def test_gateway_credentials_change_only_after_a_recent_second_factor(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    await _stale(console, clock)
    stale = await console.post("/console/gateways", {"provider": "sandbox", "credentials": "{}"})
    assert stale.status_code == 401
    await _step_up(console, clock, secret, "/console/gateways")
    added = await console.post("/console/gateways", {"provider": "sandbox", "credentials": "{}"})
    assert added.status_code == 303
    page = await console.get("/console/gateways")
    [account] = re.findall(r"/console/gateways/(ga_[A-Za-z0-9]+)/remove", page.text)
    bad = await console.post("/console/gateways", {"provider": "stripe", "credentials": "{"})
    assert bad.status_code == 400
    assert (await console.post(f"/console/gateways/{account}/remove", {})).status_code == 303
    caller = Caller(merchant_id=operator.merchant_id, livemode=False)
    assert await container.gateway_accounts.list(caller) == []
    async with container.engines.write.connect() as conn:
        actors = (
            await conn.execute(
                text("SELECT actor_type FROM audit_events WHERE event_type LIKE :t"),
                {"t": "api:gateway_account:%"},
            )
        ).all()
    assert [a.actor_type for a in actors] == ["user", "user"]


async def test_exports_need_a_recent_second_factor(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    await _stale(console, clock)
    assert (await console.post("/console/exports", {"report": "volume"})).status_code == 401
    await _step_up(console, clock, secret, "/console/exports")
    csv = await console.post("/console/exports", {"report": "volume"})
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == 'attachment; filename="volume.csv"'
    assert csv.text.splitlines()[0].startswith("day,")


async def test_refunds_above_the_threshold_need_a_recent_second_factor(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    secret = await enrol(console, clock)
    caller = Caller(merchant_id=operator.merchant_id, livemode=False)
    pi = await container.payments.create_payment_intent(
        caller,
        CreatePaymentIntent(amount=50_000, currency="usd", payment_method="tok_visa", confirm=True),
        None,
    )
    assert (await container.merchants.refund_step_up_amount(operator.merchant_id)) == 10_000
    await _stale(console, clock)
    small = await console.post(f"/console/payments/{pi.id}/refund", {"amount": "10000"})
    assert small.status_code == 303, "at the threshold: no step-up"
    large = await console.post(f"/console/payments/{pi.id}/refund", {"amount": "10001"})
    assert large.status_code == 401
    await _step_up(console, clock, secret, "/console/payments")
    assert (
        await console.post(f"/console/payments/{pi.id}/refund", {"amount": "10001"})
    ).status_code == 303
    refreshed = await container.payments.get_payment_intent(caller, pi.id)
    assert refreshed.amount_refunded == 20_001

    clerk = await container.operators.create(
        operator.merchant_id, "support@example.com", "support", PASSWORD
    )
    assert clerk.role.value == "support"


async def test_support_sees_customers_masked_and_may_not_refund_above_the_threshold(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    """The policy's rules in the console: `support` sees personal data masked (the owner sees
    it whole), and a support operator's refund above the threshold is refused even after a
    fresh second factor (it needs finance or owner)."""
    await enrol(console, clock)
    caller = Caller(merchant_id=operator.merchant_id, livemode=False)
    customer = await container.payments.create_customer(
        caller, CreateCustomer(email="alice@example.com"), None
    )
    assert not isinstance(customer, Replayed)
    pi = await container.payments.create_payment_intent(
        caller,
        CreatePaymentIntent(
            amount=50_000,
            currency="usd",
            customer=customer.id,
            payment_method="tok_visa",
            confirm=True,
        ),
        None,
    )
    assert not isinstance(pi, Replayed)
    owner_page = await console.get("/console/payments")
    assert "alice@example.com" in owner_page.text

    clerk = await container.operators.create(
        operator.merchant_id, "clerk@example.com", "support", PASSWORD
    )
    clerk_console = await _enrolled(console, clerk.email, clock)
    clerk_page = await clerk_console.get("/console/payments")
    assert clerk_page.status_code == 200
    assert "alice@example.com" not in clerk_page.text
    assert "a•••@example.com" in clerk_page.text

    small = await clerk_console.post(f"/console/payments/{pi.id}/refund", {"amount": "100"})
    assert small.status_code == 303, "support refunds up to the threshold"
    large = await clerk_console.post(f"/console/payments/{pi.id}/refund", {"amount": "10001"})
    assert large.status_code == 403, "even with a second factor a minute old"
    assert "finance or owner" in large.text
    assert (await container.payments.get_payment_intent(caller, pi.id)).amount_refunded == 100


async def _enrolled(console: Console, email: str, clock: FakeClock) -> Console:
    """Another browser on the same app: `email` signed in with TOTP set up."""
    other = Console(console.http, console.origin)
    await other.post("/console/sign-in", {"email": email, "password": PASSWORD})
    page = await other.get("/console/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret
    await other.post(
        "/console/totp",
        {"code": pyotp.TOTP(secret.group(1)).at(clock.now()), "csrf_token": csrf_in(page.text)},
    )
    return other


async def test_an_owner_of_another_merchant_reaches_none_of_our_objects(
    console: Console, container: Container, operator: Operator, clock: FakeClock
) -> None:
    """The console's routes that name an object, from the app's route table, posted by merchant
    B's owner (signed in, second factor fresh) with merchant A's ids: none takes effect."""
    await enrol(console, clock)  # A's owner, whose session B will try to end
    a = Caller(merchant_id=operator.merchant_id, livemode=False)
    clerk = await container.operators.create(
        a.merchant_id, "a-clerk@example.com", "viewer", PASSWORD
    )
    account = await container.gateway_accounts.create(a, "sandbox", {})
    pi = await container.payments.create_payment_intent(
        a,
        CreatePaymentIntent(amount=5000, currency="usd", payment_method="tok_visa", confirm=True),
        None,
    )
    assert not isinstance(pi, Replayed)
    [session] = await container.sessions.list(operator.id)

    other = await container.merchants.create_merchant("Other Ltd")
    await container.operators.create(other.id, "b-owner@example.com", "owner", PASSWORD)
    b = await _enrolled(console, "b-owner@example.com", clock)
    attempts = {
        "/console/operators/{operator_id}/{change}": [
            (f"/console/operators/{clerk.id}/role", {"role": "owner"}),
            (f"/console/operators/{clerk.id}/unlock", {}),
        ],
        "/console/gateways/{account_id}/remove": [
            (f"/console/gateways/{account.account.id}/remove", {})
        ],
        "/console/payments/{payment_intent}/refund": [
            (f"/console/payments/{pi.id}/refund", {"amount": "100"})
        ],
        "/console/sessions/{session_id}/revoke": [(f"/console/sessions/{session.id}/revoke", {})],
        "/console/invitations/{token}": [],  # the token itself is the credential
    }
    with_ids = {
        path
        for _, path, _ in routes(create_app(container))
        if path.startswith("/console/") and "{" in path
    }
    assert with_ids == set(attempts), "a console route naming an object needs a case here"
    for cases in attempts.values():
        for path, form in cases:
            answer = await b.post(path, form)
            assert answer.status_code in (400, 403, 404), (path, answer.status_code)
            assert "No such" in answer.text, (path, answer.text)  # as for an unknown id
    assert (await container.operators.get(clerk.id)).role.value == "viewer"
    assert [g.id for g in await container.gateway_accounts.list(a)] == [account.account.id]
    assert (await container.payments.get_payment_intent(a, pi.id)).amount_refunded == 0
    assert [s.id for s in await container.sessions.list(operator.id)] == [session.id]
