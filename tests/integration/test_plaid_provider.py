"""PlaidProvider against a stand-in for Plaid's API, not a mock: the official `plaid-python`
SDK sends real HTTP to a server on 127.0.0.1 that each test starts
(tests/standins/plaid_server.py). The stand-in speaks Plaid's JSON and error bodies, checks
the client id and secret, keeps items in memory (single-use public tokens, access tokens that
stop working once rotated) and records every request, so the tests assert both the answers and
what went over the wire. Webhooks are signed by the stand-in's own ES256 signer and checked by
PlaidWebhookVerifier with keys fetched through the provider."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.adapters.banks.plaid import PlaidProvider
from strongroom.adapters.banks.plaid_webhooks import PlaidWebhookVerifier, WebhookRejected
from strongroom.adapters.banks.port import BankProvider, BankProviderError
from strongroom.domain.bank_accounts import VerificationStatus
from tests.standins.plaid_server import (
    Account,
    PlaidFault,
    PlaidStandIn,
    instant_checking,
    no_verified_numbers,
    pending_automatic,
)
from tests.support import FakeClock

CLIENT_ID = "5f2c0ffee0ddba11c0ffee00"
SECRET = "0123456789abcdef0123456789abcd"
WEBHOOK_URL = "https://strongroom.test/v1/bank_webhooks/plaid"


@pytest.fixture
def standin() -> Iterator[PlaidStandIn]:
    with PlaidStandIn(client_id=CLIENT_ID, secret=SECRET) as server:
        yield server


@pytest.fixture
def provider(standin: PlaidStandIn) -> PlaidProvider:
    return PlaidProvider(CLIENT_ID, SECRET, standin.url, timeout=5.0)


async def _link(provider: PlaidProvider, standin: PlaidStandIn, *accounts: Account) -> str:
    item = await provider.exchange_public_token(standin.public_token(accounts=list(accounts)))
    return item.access_token


def test_it_is_a_bank_provider(provider: PlaidProvider) -> None:
    checked: BankProvider = provider  # mypy checks the protocol; this checks the name
    assert checked.name == "plaid"


# --- link tokens ---------------------------------------------------------------------------------


async def test_a_link_token_is_made_for_the_user_with_the_webhook(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    before = datetime.now(UTC)

    token = await provider.create_link_token(client_user_id="mer_123", webhook_url=WEBHOOK_URL)

    assert token.link_token in standin.link_tokens
    assert token.expiration.tzinfo is not None
    assert before < token.expiration <= before + timedelta(hours=4, seconds=1)
    [sent] = standin.to("/link/token/create")
    assert sent.body["user"] == {"client_user_id": "mer_123"}
    assert sent.body["webhook"] == WEBHOOK_URL
    assert sent.body["products"] == ["auth"]
    assert sent.body["country_codes"] == ["US"]
    assert sent.body["client_name"] == "Strongroom"
    # Credentials go in Plaid's headers; the stand-in checked them (it keeps no secret).
    assert sent.headers["plaid-client-id"] == CLIENT_ID
    assert "plaid-secret" not in sent.headers


async def test_the_configured_client_name_countries_and_products_are_sent(
    standin: PlaidStandIn,
) -> None:
    provider = PlaidProvider(
        CLIENT_ID,
        SECRET,
        standin.url,
        client_name="Acme Payouts",
        country_codes=("US", "CA"),
        products=("auth", "identity"),
    )

    await provider.create_link_token(client_user_id="mer_9", webhook_url=WEBHOOK_URL)

    [sent] = standin.to("/link/token/create")
    assert sent.body["client_name"] == "Acme Payouts"
    assert sent.body["country_codes"] == ["US", "CA"]
    assert sent.body["products"] == ["auth", "identity"]


def test_a_country_or_product_plaid_does_not_know_fails_at_construction(
    standin: PlaidStandIn,
) -> None:
    with pytest.raises(ValueError, match="CountryCode ZZ"):
        PlaidProvider(CLIENT_ID, SECRET, standin.url, country_codes=("US", "ZZ"))
    with pytest.raises(ValueError, match="Products ach"):
        PlaidProvider(CLIENT_ID, SECRET, standin.url, products=("ach",))


# --- exchange ------------------------------------------------------------------------------------


async def test_a_public_token_is_exchanged_for_the_item_and_an_access_token(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    public = standin.public_token()

    item = await provider.exchange_public_token(public)

    assert item.item_id in standin.items
    assert item.access_token.startswith("access-sandbox-")
    assert standin.item_id_for_access_token(item.access_token) == item.item_id
    [sent] = standin.to("/item/public_token/exchange")
    assert sent.body == {"public_token": public}


async def test_a_public_token_is_single_use(provider: PlaidProvider, standin: PlaidStandIn) -> None:
    public = standin.public_token()
    await provider.exchange_public_token(public)

    with pytest.raises(BankProviderError) as caught:
        await provider.exchange_public_token(public)

    assert caught.value.code == "INVALID_PUBLIC_TOKEN"
    assert not caught.value.retryable


async def test_a_bad_public_token_is_plaids_code_and_never_in_the_message(
    standin: PlaidStandIn,
) -> None:
    """Even when Plaid's message quotes the token we sent, ours does not."""
    standin.echo_tokens_in_errors = True
    provider = PlaidProvider(CLIENT_ID, SECRET, standin.url)
    bad = "public-sandbox-5bd4b6b1-0ae6-4b8a-bb1f-0c1f4bc2a3d9"

    with pytest.raises(BankProviderError) as caught:
        await provider.exchange_public_token(bad)

    error = caught.value
    assert error.code == "INVALID_PUBLIC_TOKEN"
    assert "INVALID_PUBLIC_TOKEN" in str(error)
    assert bad not in str(error)
    assert bad not in repr(error.args)
    assert error.__cause__ is None
    assert error.__suppress_context__  # the SDK's exception text holds the raw response
    # The stand-in did say it: the redaction is the adapter's.
    [sent] = standin.to("/item/public_token/exchange")
    assert sent.body["public_token"] == bad


# --- item accounts -------------------------------------------------------------------------------


async def test_an_instant_auth_account_is_verified_and_has_its_numbers(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    checking = instant_checking(account="1111222233330000", routing="011401533")
    access = await _link(provider, standin, checking)

    found = await provider.item_accounts(access)

    assert found.institution == "First Platypus Bank"
    [account] = found.accounts
    assert account.account_id == checking.account_id
    assert (account.name, account.mask, account.type, account.subtype) == (
        "Plaid Checking", "0000", "depository", "checking",
    )  # fmt: skip
    assert account.verification_status is VerificationStatus.AUTOMATICALLY_VERIFIED
    numbers = found.numbers[checking.account_id]
    assert (numbers.account, numbers.routing) == ("1111222233330000", "011401533")
    [sent] = standin.to("/auth/get")
    assert sent.body == {"access_token": access}


async def test_an_account_pending_automatic_verification_has_no_numbers_yet(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    savings = pending_automatic()
    access = await _link(provider, standin, savings)

    found = await provider.item_accounts(access)

    [account] = found.accounts
    assert account.verification_status is VerificationStatus.PENDING_AUTOMATIC
    assert account.subtype == "savings"
    assert found.numbers == {}


async def test_an_account_without_verified_numbers_is_unverified(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    other = no_verified_numbers()
    access = await _link(provider, standin, other)

    found = await provider.item_accounts(access)

    [account] = found.accounts
    assert account.verification_status is None
    assert found.numbers == {}


async def test_numbers_are_given_only_for_the_accounts_auth_has_them_for(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    checking, savings, other = instant_checking(), pending_automatic(), no_verified_numbers()
    access = await _link(provider, standin, checking, savings, other)

    found = await provider.item_accounts(access)

    statuses = {a.account_id: a.verification_status for a in found.accounts}
    assert statuses == {
        checking.account_id: VerificationStatus.AUTOMATICALLY_VERIFIED,
        savings.account_id: VerificationStatus.PENDING_AUTOMATIC,
        other.account_id: None,
    }
    assert set(found.numbers) == {checking.account_id}


@pytest.mark.parametrize(
    ("plaid_status", "numbers", "expected"),
    [
        ("automatically_verified", ("9900009606", "011401533"), "automatically_verified"),
        ("manually_verified", ("9900009606", "011401533"), "manually_verified"),
        ("pending_automatic_verification", None, "pending_automatic_verification"),
        ("pending_manual_verification", None, "pending_manual_verification"),
        ("verification_expired", None, "verification_expired"),
        ("verification_failed", None, "verification_failed"),
        # Not a verification of ownership: a matched database record, micro-deposits unsent.
        ("database_matched", ("9900009606", "011401533"), None),
        ("unsent", None, None),
        # A value Plaid adds later (the SDK lets it through) is not taken as verified.
        ("some_future_status", ("9900009606", "011401533"), None),
    ],
)
async def test_plaids_verification_status_is_mapped(
    provider: PlaidProvider,
    standin: PlaidStandIn,
    plaid_status: str,
    numbers: tuple[str, str] | None,
    expected: str | None,
) -> None:
    account = Account(name="Checking", mask="9606", verification_status=plaid_status,
                      numbers=numbers)  # fmt: skip
    access = await _link(provider, standin, account)

    [found] = (await provider.item_accounts(access)).accounts

    assert found.verification_status == (None if expected is None else VerificationStatus(expected))


async def test_the_institution_name_is_looked_up_when_the_item_lacks_it(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    standin.omit_institution_name = True
    item = await provider.exchange_public_token(
        standin.public_token(institution="Tartan Savings", institution_id="ins_109511")
    )

    found = await provider.item_accounts(item.access_token)

    assert found.institution == "Tartan Savings"
    [sent] = standin.to("/institutions/get_by_id")
    assert sent.body["institution_id"] == "ins_109511"
    assert sent.body["country_codes"] == ["US"]


async def test_a_failed_institution_lookup_leaves_the_name_unknown(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    standin.omit_institution_name = True
    access = await _link(provider, standin, instant_checking())
    standin.institutions.clear()

    found = await provider.item_accounts(access)

    assert found.institution is None
    assert len(found.accounts) == 1


async def test_the_institution_name_costs_no_second_call_when_plaid_gives_it(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    access = await _link(provider, standin, instant_checking())

    await provider.item_accounts(access)

    assert standin.to("/institutions/get_by_id") == []


# --- rotation ------------------------------------------------------------------------------------


async def test_rotation_gives_a_new_token_and_the_old_one_stops_working(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    checking = instant_checking()
    old = await _link(provider, standin, checking)

    new = await provider.rotate_access_token(old)

    assert new != old
    with pytest.raises(BankProviderError) as caught:
        await provider.item_accounts(old)
    assert caught.value.code == "INVALID_ACCESS_TOKEN"
    assert old not in str(caught.value)
    found = await provider.item_accounts(new)
    assert [a.account_id for a in found.accounts] == [checking.account_id]


async def test_an_invalid_access_token_is_kept_out_of_the_message(standin: PlaidStandIn) -> None:
    standin.echo_tokens_in_errors = True
    provider = PlaidProvider(CLIENT_ID, SECRET, standin.url)
    access = await _link(provider, standin, instant_checking())
    await provider.rotate_access_token(access)

    with pytest.raises(BankProviderError) as caught:
        await provider.rotate_access_token(access)

    assert caught.value.code == "INVALID_ACCESS_TOKEN"
    assert access not in str(caught.value)
    assert "[redacted]" in str(caught.value)


async def test_no_token_reaches_a_log_line(
    provider: PlaidProvider, standin: PlaidStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK logs whole response bodies at DEBUG ("plaid.rest"). With the root logger at
    DEBUG, a link, a read, a rotation and a failure still leave no token in any record."""
    caplog.set_level(logging.DEBUG)
    public = standin.public_token(accounts=[instant_checking()])

    item = await provider.exchange_public_token(public)
    await provider.item_accounts(item.access_token)
    new = await provider.rotate_access_token(item.access_token)
    with pytest.raises(BankProviderError):
        await provider.item_accounts(item.access_token)

    assert not logging.getLogger("plaid.rest").isEnabledFor(logging.DEBUG)
    for token in (public, item.access_token, new):
        assert token not in caplog.text


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "retryable"),
    [
        (PlaidFault(500, "API_ERROR", "INTERNAL_SERVER_ERROR"), True),
        (PlaidFault(503, "INSTITUTION_ERROR", "INSTITUTION_DOWN"), True),
        (PlaidFault(429, "RATE_LIMIT_EXCEEDED", "RATE_LIMIT"), True),
        (PlaidFault(400, "RATE_LIMIT_EXCEEDED", "AUTH_LIMIT"), True),
        (PlaidFault(400, "ITEM_ERROR", "PRODUCT_NOT_READY"), False),
        (PlaidFault(400, "INVALID_REQUEST", "MISSING_FIELDS"), False),
    ],
)
async def test_plaid_errors_carry_the_code_and_whether_to_retry(
    provider: PlaidProvider, standin: PlaidStandIn, fault: PlaidFault, retryable: bool
) -> None:
    access = await _link(provider, standin, instant_checking())
    standin.fail_next(1, fault)

    with pytest.raises(BankProviderError) as caught:
        await provider.item_accounts(access)

    assert caught.value.code == fault.error_code
    assert caught.value.retryable is retryable
    assert access not in str(caught.value)


async def test_a_wrong_secret_is_invalid_api_keys(standin: PlaidStandIn) -> None:
    provider = PlaidProvider(CLIENT_ID, "not-the-secret-000000000000000", standin.url)

    with pytest.raises(BankProviderError) as caught:
        await provider.create_link_token(client_user_id="mer_1", webhook_url=WEBHOOK_URL)

    assert caught.value.code == "INVALID_API_KEYS"
    assert not caught.value.retryable
    assert "not-the-secret" not in str(caught.value)


async def test_plaid_unreachable_is_a_retryable_network_error() -> None:
    with PlaidStandIn(client_id=CLIENT_ID, secret=SECRET) as gone:
        url = gone.url  # a port that was just ours and is now closed
    provider = PlaidProvider(CLIENT_ID, SECRET, url, timeout=2.0)

    with pytest.raises(BankProviderError) as caught:
        await provider.exchange_public_token("public-sandbox-6a1e0d9e-3f6b-4c1e-9d2a-1b7f5e0c4a11")

    assert caught.value.code == "NETWORK_ERROR"
    assert caught.value.retryable
    assert "public-sandbox" not in str(caught.value)


# --- the event loop ------------------------------------------------------------------------------


async def test_sdk_calls_do_not_block_the_event_loop(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    """The SDK is synchronous; run in a worker thread, a slow Plaid leaves the loop free. The
    stand-in holds /auth/get until this test, running on the loop, releases it; were the call
    made on the loop's own thread, nothing could release it and the hold would expire."""
    access = await _link(provider, standin, instant_checking())
    standin.hold_next()

    call = asyncio.create_task(provider.item_accounts(access))
    assert await asyncio.to_thread(standin.wait_held, 5.0)
    standin.release()
    found = await call

    assert not standin.hold_expired
    assert len(found.accounts) == 1


# --- webhook keys and a verified delivery end to end ---------------------------------------------


async def test_the_webhook_key_is_the_jwk_with_its_expiry(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    kid = standin.signer.current_kid

    key = await provider.webhook_verification_key(kid)

    assert key == standin.signer.jwk(kid)
    assert key is not None
    assert key["expired_at"] is None
    assert {"alg", "crv", "kid", "kty", "use", "x", "y", "created_at"} <= set(key)


async def test_an_unknown_webhook_key_is_none(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    assert await provider.webhook_verification_key("0f3c2b1a-0000-4000-8000-000000000000") is None


async def test_a_webhook_key_lookup_with_a_wrong_secret_raises(standin: PlaidStandIn) -> None:
    """INVALID_API_KEYS is also an INVALID_INPUT error, but not an answer about the key: it
    must not look like "no such key" (every webhook would then be rejected in silence)."""
    provider = PlaidProvider(CLIENT_ID, "not-the-secret-000000000000000", standin.url)

    with pytest.raises(BankProviderError) as caught:
        await provider.webhook_verification_key(standin.signer.current_kid)

    assert caught.value.code == "INVALID_API_KEYS"


async def test_a_webhook_is_verified_with_the_key_fetched_from_plaid(
    provider: PlaidProvider, standin: PlaidStandIn
) -> None:
    clock = FakeClock(datetime.now(UTC))
    verifier = PlaidWebhookVerifier(provider.webhook_verification_key, clock)
    body = json.dumps({"webhook_type": "AUTH", "webhook_code": "AUTOMATICALLY_VERIFIED"}).encode()
    iat = int(time.time())

    await verifier.verify(standin.sign_webhook(body, iat=iat), body)
    await verifier.verify(standin.sign_webhook(body, iat=iat), body)

    assert len(standin.to("/webhook_verification_key/get")) == 1
    with pytest.raises(WebhookRejected):
        await verifier.verify(standin.sign_webhook(body, iat=iat, alg="HS256"), body)
    with pytest.raises(WebhookRejected):
        await verifier.verify(standin.sign_webhook(body, iat=iat, kid="unknown-kid"), body)
    other_body = hashlib.sha256(b"{}").hexdigest()
    with pytest.raises(WebhookRejected):
        await verifier.verify(
            standin.sign_webhook(body, iat=iat, request_body_sha256=other_body), body
        )
