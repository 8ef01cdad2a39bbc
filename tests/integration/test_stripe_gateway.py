"""StripeGateway against a stand-in for Stripe's API, not a mock: the official `stripe` SDK sends
real HTTP to a server on 127.0.0.1 that each test starts (tests/standins/stripe_server.py). The
stand-in speaks the PaymentIntents and Refunds subset in Stripe's form encoding, honours
Idempotency-Key as Stripe does, and records every request (method, path, headers, parsed
params), so the tests assert both the answers and what went over the wire. Webhook signatures
are made with the stand-in's own hmac signer and checked by the SDK's verifier.

The secret key has the shape of a real one on purpose: the suite's leak scan fails the run if it
ever reaches a log line."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from strongroom.adapters.gateways.port import (
    ChargeState,
    GatewayNotReached,
    GatewayOutcomeUnknown,
    GatewayServerError,
    GatewayTimeout,
)
from strongroom.adapters.gateways.stripe import (
    StripeGateway,
    StripeRequestRejected,
    WebhookSignatureInvalid,
    verify_stripe_webhook,
)
from strongroom.domain.model import ActionRequired, Approved, Declined
from tests.standins.stripe_server import StripeStandIn, sign_webhook

# The SDK's HTTPXClient passes the form body as `data=<str>`, which httpx deprecates; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

SECRET_KEY = "sk_test_51StandInKeyForStripeAdapterTests0"
RETURN_URL = "https://strongroom.test/v1/return"
PI_PATH = "/v1/payment_intents"


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with StripeStandIn(secret_key=SECRET_KEY) as server:
        yield server


@pytest.fixture
async def gateway(standin: StripeStandIn) -> AsyncIterator[StripeGateway]:
    gw = StripeGateway(secret_key=SECRET_KEY, base_url=standin.url, read_timeout=5.0)
    yield gw
    await gw.aclose()


async def _charge(
    gateway: StripeGateway, card: str = "tok_visa", *, capture: bool = True, key: str = "k-auth"
) -> str:
    answer = await gateway.authorize(
        payment_method=card, amount=1000, currency="usd", capture=capture, idempotency_key=key
    )
    assert isinstance(answer, Approved), answer
    return answer.reference


# --- authorize -----------------------------------------------------------------------------------


async def test_a_token_is_charged_with_one_create_and_confirm(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    answer = await gateway.authorize(
        payment_method="tok_visa", amount=1000, currency="USD", capture=True, idempotency_key="k1"
    )

    assert isinstance(answer, Approved)
    assert answer.captured
    assert answer.reference.startswith("pi_")
    [sent] = standin.to("POST", PI_PATH)
    assert sent.idempotency_key == "k1"
    assert sent.params == {
        "amount": "1000",
        "currency": "usd",
        "confirm": "true",
        "capture_method": "automatic",
        "payment_method_types": ["card"],
        "payment_method_data": {"type": "card", "card": {"token": "tok_visa"}},
    }
    status = await gateway.retrieve(reference=answer.reference)
    assert (status.state, status.amount_captured, status.amount_refunded) == (
        ChargeState.CAPTURED,
        1000,
        0,
    )


async def test_a_payment_method_id_is_passed_as_it_is(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    await _charge(gateway, "pm_card_mastercard")

    [sent] = standin.to("POST", PI_PATH)
    assert sent.params["payment_method"] == "pm_card_mastercard"
    assert "payment_method_data" not in sent.params


async def test_a_hold_is_captured_later_for_the_amount_asked(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    reference = await _charge(gateway, capture=False)
    assert standin.to("POST", PI_PATH)[0].params["capture_method"] == "manual"
    assert (await gateway.retrieve(reference=reference)).state is ChargeState.AUTHORIZED

    answer = await gateway.capture(reference=reference, amount=600, idempotency_key="k-cap")

    assert answer == Approved(reference, captured=True)
    [sent] = standin.to("POST", f"{PI_PATH}/{reference}/capture")
    assert (sent.idempotency_key, sent.params) == ("k-cap", {"amount_to_capture": "600"})
    status = await gateway.retrieve(reference=reference)
    assert (status.state, status.amount_captured) == (ChargeState.CAPTURED, 600)


async def test_capturing_more_than_the_hold_is_declined(gateway: StripeGateway) -> None:
    reference = await _charge(gateway, capture=False)

    answer = await gateway.capture(reference=reference, amount=1001, idempotency_key="k-cap")

    assert isinstance(answer, Declined)
    assert (answer.reference, answer.code) == (reference, "amount_too_large")


@pytest.mark.parametrize(
    ("token", "code", "decline_code"),
    [
        ("tok_chargeDeclined", "card_declined", "generic_decline"),
        ("tok_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
        ("tok_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
        ("tok_chargeDeclinedProcessingError", "processing_error", "processing_error"),
    ],
)
async def test_a_card_error_is_declined_with_stripes_codes(
    gateway: StripeGateway, standin: StripeStandIn, token: str, code: str, decline_code: str
) -> None:
    answer = await gateway.authorize(
        payment_method=token, amount=1000, currency="usd", capture=True, idempotency_key="k1"
    )

    assert isinstance(answer, Declined)
    assert (answer.code, answer.decline_code) == (code, decline_code)
    assert answer.reference in standin.payment_intents
    assert answer.message
    status = await gateway.retrieve(reference=answer.reference)
    assert status.state is ChargeState.FAILED
    assert status.decline is not None
    assert (status.decline.code, status.decline.decline_code) == (code, decline_code)


async def test_an_unknown_token_is_declined_without_echoing_it(gateway: StripeGateway) -> None:
    answer = await gateway.authorize(
        payment_method="tok_notAStripeToken",
        amount=1000,
        currency="usd",
        capture=True,
        idempotency_key="k1",
    )

    assert isinstance(answer, Declined)
    assert (answer.reference, answer.code) == (None, "payment_method_invalid")
    assert "tok_notAStripeToken" not in answer.message


# --- 3-D Secure ----------------------------------------------------------------------------------


async def test_3ds_asks_for_action_then_confirm_action_approves_once_completed(
    standin: StripeStandIn,
) -> None:
    gateway = StripeGateway(secret_key=SECRET_KEY, base_url=standin.url, return_url=RETURN_URL)
    try:
        answer = await gateway.authorize(
            payment_method="tok_threeDSecureRequired",
            amount=1000,
            currency="usd",
            capture=True,
            idempotency_key="k-auth",
        )
        assert isinstance(answer, ActionRequired)
        assert answer.url == f"{standin.url}/3ds/{answer.reference}"
        assert standin.to("POST", PI_PATH)[0].params["return_url"] == RETURN_URL
        async with httpx.AsyncClient() as browser:  # the page the customer is sent to
            page = await browser.get(answer.url)
        assert page.status_code == 200
        assert answer.reference in page.text
        status = await gateway.retrieve(reference=answer.reference)
        assert status.state is ChargeState.REQUIRES_ACTION
        not_yet = await gateway.confirm_action(
            reference=answer.reference, capture=True, idempotency_key="k-resume"
        )
        assert not_yet == ActionRequired(answer.reference, answer.url)
        assert standin.charges["k-auth"] == 0

        standin.complete_challenge(answer.reference)
        done = await gateway.confirm_action(
            reference=answer.reference, capture=True, idempotency_key="k-resume"
        )

        assert done == Approved(answer.reference, captured=True)
        assert standin.charges["k-auth"] == 1
        assert (await gateway.retrieve(reference=answer.reference)).state is ChargeState.CAPTURED
    finally:
        await gateway.aclose()


async def test_3ds_without_a_return_url_uses_stripe_js_challenge_page(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    answer = await gateway.authorize(
        payment_method="tok_threeDSecureRequired",
        amount=1000,
        currency="usd",
        capture=False,
        idempotency_key="k-auth",
    )

    assert isinstance(answer, ActionRequired)
    assert answer.url == f"{standin.url}/3ds/{answer.reference}"
    assert "return_url" not in standin.to("POST", PI_PATH)[0].params
    standin.complete_challenge(answer.reference)
    done = await gateway.confirm_action(
        reference=answer.reference, capture=False, idempotency_key="k-resume"
    )
    assert done == Approved(answer.reference, captured=False)


async def test_a_failed_challenge_is_declined(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    answer = await gateway.authorize(
        payment_method="tok_threeDSecureRequired",
        amount=1000,
        currency="usd",
        capture=True,
        idempotency_key="k-auth",
    )
    assert isinstance(answer, ActionRequired)

    standin.complete_challenge(answer.reference, succeeded=False)
    done = await gateway.confirm_action(
        reference=answer.reference, capture=True, idempotency_key="k-resume"
    )

    assert isinstance(done, Declined)
    assert done.reference == answer.reference
    assert done.code == "payment_intent_authentication_failure"
    status = await gateway.retrieve(reference=answer.reference)
    assert status.state is ChargeState.FAILED
    assert status.decline is not None
    assert status.decline.code == "payment_intent_authentication_failure"
    assert standin.charges["k-auth"] == 0


async def test_confirm_action_confirms_an_intent_still_awaiting_confirmation_with_our_key(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    # An intent created elsewhere without confirming (the adapter always confirms at once).
    async with httpx.AsyncClient(base_url=standin.url) as client:
        created = await client.post(
            PI_PATH,
            data={"amount": "1000", "currency": "usd", "payment_method": "pm_card_visa"},
            headers={"Authorization": f"Bearer {SECRET_KEY}"},
        )
    reference = created.json()["id"]
    assert created.json()["status"] == "requires_confirmation"

    answer = await gateway.confirm_action(
        reference=reference, capture=True, idempotency_key="k-resume"
    )

    assert answer == Approved(reference, captured=True)
    [sent] = standin.to("POST", f"{PI_PATH}/{reference}/confirm")
    assert sent.idempotency_key == "k-resume"
    assert standin.charges["k-resume"] == 1


# --- void and refund -----------------------------------------------------------------------------


async def test_void_cancels_the_hold(gateway: StripeGateway, standin: StripeStandIn) -> None:
    reference = await _charge(gateway, capture=False)

    assert await gateway.void(reference=reference, idempotency_key="k-void") == Approved(reference)

    [sent] = standin.to("POST", f"{PI_PATH}/{reference}/cancel")
    assert sent.idempotency_key == "k-void"
    assert (await gateway.retrieve(reference=reference)).state is ChargeState.CANCELED
    again = await gateway.void(reference=reference, idempotency_key="k-void-2")
    assert isinstance(again, Declined)
    assert again.code == "payment_intent_unexpected_state"


async def test_refunds_are_approved_with_the_refund_id_until_nothing_is_left(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    reference = await _charge(gateway)

    answer = await gateway.refund(reference=reference, amount=300, idempotency_key="k-re")

    assert isinstance(answer, Approved)
    assert answer.reference.startswith("re_")
    [sent] = standin.to("POST", "/v1/refunds")
    assert sent.idempotency_key == "k-re"
    assert sent.params == {"payment_intent": reference, "amount": "300"}
    status = await gateway.retrieve(reference=reference)
    assert (status.amount_captured, status.amount_refunded) == (1000, 300)
    too_much = await gateway.refund(reference=reference, amount=701, idempotency_key="k-re-2")
    assert isinstance(too_much, Declined)
    assert too_much.code == "amount_too_large"


async def test_a_failed_refund_is_declined_with_stripes_reason(gateway: StripeGateway) -> None:
    reference = await _charge(gateway, "tok_refundFail")

    answer = await gateway.refund(reference=reference, amount=300, idempotency_key="k-re")

    assert isinstance(answer, Declined)
    assert answer.reference is not None
    assert answer.reference.startswith("re_")
    assert answer.code == "expired_or_canceled_card"
    assert (await gateway.retrieve(reference=reference)).amount_refunded == 0


async def test_retrieving_an_unknown_reference_raises_lookup_error(
    gateway: StripeGateway,
) -> None:
    with pytest.raises(LookupError):
        await gateway.retrieve(reference="pi_doesNotExist")


# --- idempotency and failures --------------------------------------------------------------------


async def test_a_charge_retried_after_a_dropped_answer_is_made_once(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    standin.drop_after_charge()
    with pytest.raises(GatewayTimeout):
        await _charge(gateway, key="k-once")
    assert standin.charges["k-once"] == 1  # Stripe charged; we never heard

    reference = await _charge(gateway, key="k-once")

    sent = standin.to("POST", PI_PATH)
    assert [r.idempotency_key for r in sent] == ["k-once", "k-once"]
    assert sent[0].params == sent[1].params
    assert standin.replayed == ["k-once"]
    assert standin.charges["k-once"] == 1
    assert list(standin.payment_intents) == [reference]


async def test_a_capture_retried_after_a_dropped_answer_captures_once(
    gateway: StripeGateway, standin: StripeStandIn
) -> None:
    reference = await _charge(gateway, capture=False)
    standin.drop_after_charge()
    with pytest.raises(GatewayTimeout):
        await gateway.capture(reference=reference, amount=1000, idempotency_key="k-cap")

    answer = await gateway.capture(reference=reference, amount=1000, idempotency_key="k-cap")

    assert answer == Approved(reference, captured=True)
    assert standin.replayed == ["k-cap"]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_5xx_and_429_are_server_errors_and_nothing_is_charged(
    gateway: StripeGateway, standin: StripeStandIn, status: int
) -> None:
    standin.fail_next(1, status=status)

    with pytest.raises(GatewayServerError):
        await _charge(gateway, key="k1")

    assert len(standin.to("POST", PI_PATH)) == 1  # the SDK did not retry on its own
    assert standin.charges["k1"] == 0
    await _charge(gateway, key="k1")
    assert standin.charges["k1"] == 1
    assert [r.idempotency_key for r in standin.to("POST", PI_PATH)] == ["k1", "k1"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "base_url",
    [f"http://127.0.0.1:{_closed_port()}", "http://stripe-standin.invalid"],
    ids=["connection-refused", "name-not-resolved"],
)
async def test_a_request_that_never_left_is_not_reached(base_url: str) -> None:
    gateway = StripeGateway(secret_key=SECRET_KEY, base_url=base_url, connect_timeout=2.0)
    try:
        with pytest.raises(GatewayNotReached) as caught:
            await _charge(gateway)
    finally:
        await gateway.aclose()
    # Failover is allowed only from here: it must not read as "outcome unknown".
    assert not isinstance(caught.value, GatewayOutcomeUnknown)


async def test_no_answer_in_time_is_a_timeout_and_the_retry_finds_the_first_charge(
    standin: StripeStandIn,
) -> None:
    # 0.2 s is the client's own read timeout, the one thing under test; the stand-in holds
    # the request on an Event, so nothing here sleeps.
    gateway = StripeGateway(secret_key=SECRET_KEY, base_url=standin.url, read_timeout=0.2)
    try:
        standin.hold_next()
        with pytest.raises(GatewayTimeout):
            await _charge(gateway, key="k-slow")
        with pytest.raises(GatewayOutcomeUnknown) as still_running:  # Stripe's 409
            await _charge(gateway, key="k-slow")
        assert not isinstance(still_running.value, GatewayTimeout | GatewayServerError)

        standin.release()
        assert standin.wait_settled()
        reference = await _charge(gateway, key="k-slow")
    finally:
        await gateway.aclose()
    assert standin.charges["k-slow"] == 1
    assert list(standin.payment_intents) == [reference]


async def test_a_wrong_api_key_is_rejected_not_unknown(standin: StripeStandIn) -> None:
    wrong = "sk_test_51NotTheKeyTheStandInExpects00"
    gateway = StripeGateway(secret_key=wrong, base_url=standin.url)
    try:
        with pytest.raises(StripeRequestRejected) as caught:
            await _charge(gateway)
    finally:
        await gateway.aclose()
    assert caught.value.status == 401
    assert not isinstance(caught.value, GatewayOutcomeUnknown | GatewayNotReached)
    assert wrong not in str(caught.value)


async def test_a_key_reused_for_another_request_is_rejected(gateway: StripeGateway) -> None:
    await _charge(gateway, key="k-same")

    with pytest.raises(StripeRequestRejected) as caught:
        await gateway.authorize(
            payment_method="tok_visa",
            amount=2000,
            currency="usd",
            capture=True,
            idempotency_key="k-same",
        )
    assert (caught.value.status, caught.value.error_type) == (400, "idempotency_error")


async def test_capturing_an_unknown_reference_is_rejected(gateway: StripeGateway) -> None:
    with pytest.raises(StripeRequestRejected) as caught:
        await gateway.capture(reference="pi_doesNotExist", amount=100, idempotency_key="k")
    assert (caught.value.status, caught.value.code) == (404, "resource_missing")


async def test_neither_the_secret_key_nor_the_token_reaches_a_log_record(
    gateway: StripeGateway, standin: StripeStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok_notAStripeTokenButLong"
    await _charge(gateway, key="k1")
    await gateway.authorize(
        payment_method=token, amount=1000, currency="usd", capture=True, idempotency_key="k2"
    )
    standin.fail_next()
    with pytest.raises(GatewayServerError) as failed:
        await _charge(gateway, key="k3")

    assert caplog.records  # httpx did log the requests
    for text in [r.getMessage() for r in caplog.records] + [str(failed.value)]:
        assert SECRET_KEY not in text
        assert token not in text
        assert "tok_visa" not in text
    assert SECRET_KEY not in repr(gateway)


# --- webhooks ------------------------------------------------------------------------------------

WHSEC = "whsec_currentEndpointSecretForTests"
OLD_WHSEC = "whsec_previousEndpointSecretForTest"
EVENT = b'{"id":"evt_1","object":"event","type":"payment_intent.succeeded","data":{"object":{}}}'


def test_a_signed_event_verifies_and_is_returned_parsed() -> None:
    event = verify_stripe_webhook(EVENT, sign_webhook(EVENT, WHSEC), [WHSEC])
    assert (event["id"], event["type"]) == ("evt_1", "payment_intent.succeeded")


def test_rotation_accepts_a_delivery_signed_with_the_previous_secret() -> None:
    header = sign_webhook(EVENT, OLD_WHSEC)
    assert verify_stripe_webhook(EVENT, header, [WHSEC, OLD_WHSEC])["id"] == "evt_1"
    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe_webhook(EVENT, header, [WHSEC])


def test_any_matching_v1_signature_is_enough() -> None:
    now = int(time.time())
    good = sign_webhook(EVENT, WHSEC, timestamp=now).split(",")[1]
    other = sign_webhook(EVENT, OLD_WHSEC, timestamp=now).split(",")[1]
    assert verify_stripe_webhook(EVENT, f"t={now},{other},{good}", [WHSEC])["id"] == "evt_1"


def test_a_delivery_signed_299_seconds_ago_is_still_fresh() -> None:
    header = sign_webhook(EVENT, WHSEC, timestamp=int(time.time()) - 299)
    assert verify_stripe_webhook(EVENT, header, [WHSEC])["id"] == "evt_1"


def _one_byte_changed() -> bytes:
    return EVENT.replace(b"evt_1", b"evt_2")


@pytest.mark.parametrize(
    ("body", "header", "reason"),
    [
        (_one_byte_changed(), sign_webhook(EVENT, WHSEC), "no signature matches"),
        (EVENT, sign_webhook(EVENT, "whsec_someoneElsesSecret"), "no signature matches"),
        (
            EVENT,
            sign_webhook(EVENT, WHSEC, timestamp=int(time.time()) - 301),
            "timestamp outside the tolerance",
        ),
        (EVENT, None, "missing Stripe-Signature header"),
        (EVENT, "", "missing Stripe-Signature header"),
        (EVENT, sign_webhook(EVENT, WHSEC, scheme="v0"), "no v1 signature in header"),
        (EVENT, "v1=abc", "malformed Stripe-Signature header"),
    ],
    ids=[
        "body-changed",
        "wrong-secret",
        "301s-old",
        "no-header",
        "empty-header",
        "v0-only",
        "no-timestamp",
    ],
)
def test_a_bad_delivery_is_refused_with_a_short_reason(
    body: bytes, header: str | None, reason: str
) -> None:
    with pytest.raises(WebhookSignatureInvalid) as caught:
        verify_stripe_webhook(body, header, [WHSEC, OLD_WHSEC])
    assert caught.value.reason == reason
    assert WHSEC not in str(caught.value)
    assert OLD_WHSEC not in str(caught.value)


def test_a_tolerance_that_would_switch_the_time_check_off_is_refused() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        verify_stripe_webhook(EVENT, sign_webhook(EVENT, WHSEC), [WHSEC], tolerance=0)
