"""The Braintree adapter, through the official `braintree` SDK, against a local stand-in.

Braintree's sandbox cannot be reached from here, so every test starts the stand-in in
tests/standins/braintree_server.py: a real HTTP server on 127.0.0.1 (an ephemeral port) that
speaks the XML subset of Braintree's API the SDK sends, follows the sandbox's test nonces and test
amounts, records every request (method, path, parsed body, order_id) and fails on demand. Nothing
of the adapter or the SDK is mocked; webhook notifications are made by the SDK's own
`webhook_testing.sample_notification`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import braintree  # type: ignore[import-untyped]
import pytest

from strongroom.adapters.gateways.braintree import (
    BraintreeConfigurationError,
    BraintreeCredentialsRejected,
    BraintreeGateway,
    TransactionNotFound,
    WebhookSignatureInvalid,
    parse_braintree_webhook,
)
from strongroom.adapters.gateways.port import (
    ChargeState,
    GatewayNotReached,
    GatewayOutcomeUnknown,
    GatewayServerError,
    GatewayTimeout,
)
from strongroom.domain.model import Approved, Declined
from tests.standins.braintree_server import (
    CONSUMED_NONCE,
    GATEWAY_REJECTED_FRAUD_NONCE,
    PROCESSOR_DECLINED_NONCE,
    VALID_NONCE,
    BraintreeStandIn,
)


@pytest.fixture
def standin() -> Iterator[BraintreeStandIn]:
    accounts = {"strongroom_usd": "USD", "strongroom_jpy": "JPY"}
    with BraintreeStandIn(merchant_accounts=accounts) as server:
        yield server


def gateway_for(standin: BraintreeStandIn, **overrides: Any) -> BraintreeGateway:
    settings: dict[str, Any] = {
        "merchant_id": standin.merchant_id,
        "public_key": standin.public_key,
        "private_key": standin.private_key,
        "base_url": standin.url,
        "timeout": 5.0,
    }
    return BraintreeGateway(**(settings | overrides))


@pytest.fixture
def gateway(standin: BraintreeStandIn) -> BraintreeGateway:
    return gateway_for(standin)


async def charge(
    gateway: BraintreeGateway,
    key: str,
    *,
    amount: int = 1050,
    nonce: str = VALID_NONCE,
    capture: bool = True,
    currency: str = "usd",
) -> Approved | Declined:
    answer = await gateway.authorize(
        payment_method=nonce,
        amount=amount,
        currency=currency,
        capture=capture,
        idempotency_key=key,
    )
    assert isinstance(answer, Approved | Declined)
    return answer


async def approve(gateway: BraintreeGateway, key: str, **options: Any) -> Approved:
    answer = await charge(gateway, key, **options)
    assert isinstance(answer, Approved), answer
    return answer


# --- charging ------------------------------------------------------------------------------------


async def test_a_sale_with_capture_is_submitted_for_settlement(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    answer = await charge(gateway, "strongroom-op_1", amount=1050)

    assert isinstance(answer, Approved)
    assert answer.captured
    (sale,) = standin.recorded("sale")
    assert sale.order_id == "strongroom-op_1"
    assert sale.body["transaction"]["amount"] == "10.50"
    assert sale.body["transaction"]["options"] == {"submit_for_settlement": True}
    assert standin.transactions[answer.reference].status == "submitted_for_settlement"
    # The key pair went as Basic auth, and the search for an earlier attempt came first.
    assert all(r.authenticated for r in standin.requests)
    assert [r.operation for r in standin.requests] == ["search_ids", "sale"]


async def test_authorize_then_capture_part_of_it(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    held = await approve(gateway, "k-auth", amount=1500, capture=False)
    assert held == Approved(held.reference, captured=False)
    assert standin.transactions[held.reference].status == "authorized"

    captured = await gateway.capture(reference=held.reference, amount=1000, idempotency_key="k-c")

    assert captured == Approved(held.reference, captured=True)
    (submit,) = standin.recorded("submit_for_settlement")
    assert submit.body["transaction"]["amount"] == "10.00"
    status = await gateway.retrieve(reference=held.reference)
    assert (status.state, status.amount_captured) == (ChargeState.CAPTURED, 1000)


async def test_a_zero_decimal_currency_goes_to_its_merchant_account_in_whole_units(
    standin: BraintreeStandIn,
) -> None:
    gateway = gateway_for(standin, merchant_accounts={"jpy": "strongroom_jpy"})

    answer = await charge(gateway, "k-jpy", amount=1000, currency="jpy")

    assert isinstance(answer, Approved)
    (sale,) = standin.recorded("sale")
    assert sale.body["transaction"]["amount"] == "1000"
    assert sale.body["transaction"]["merchant_account_id"] == "strongroom_jpy"
    assert (await gateway.retrieve(reference=answer.reference)).amount_captured == 1000


async def test_an_unmapped_currency_is_refused_before_anything_is_sent(
    standin: BraintreeStandIn,
) -> None:
    gateway = gateway_for(standin, merchant_accounts={"jpy": "strongroom_jpy"})

    with pytest.raises(BraintreeConfigurationError, match="EUR"):
        await charge(gateway, "k-eur", currency="eur")

    assert standin.requests == []


async def test_a_charge_in_the_default_accounts_other_currency_is_not_booked(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    """Without a mapping Braintree uses the default (USD) account; an EUR payment must not be
    reported as approved when Braintree charged dollars."""
    with pytest.raises(BraintreeConfigurationError, match="in USD, not EUR") as raised:
        await charge(gateway, "k-eur", currency="eur")

    (sale_id,) = standin.transactions
    assert sale_id in str(raised.value)  # the operator is told which transaction to void


# --- declines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nonce", "amount", "decline_code", "message"),
    [
        (PROCESSOR_DECLINED_NONCE, 1050, "do_not_honor", "Do Not Honor"),
        (VALID_NONCE, 200100, "insufficient_funds", "Insufficient Funds"),
        (VALID_NONCE, 200400, "expired_card", "Expired Card"),
        (VALID_NONCE, 201000, "incorrect_cvc", "Card Issuer Declined CVV"),
        (VALID_NONCE, 204600, "generic_decline", "Processor Declined"),
    ],
)
async def test_processor_declines_map_to_decline_codes(
    gateway: BraintreeGateway,
    standin: BraintreeStandIn,
    nonce: str,
    amount: int,
    decline_code: str,
    message: str,
) -> None:
    answer = await charge(gateway, "k-decl", nonce=nonce, amount=amount)

    assert isinstance(answer, Declined)
    assert answer.reference in standin.transactions  # Braintree keeps the declined sale
    assert (answer.code, answer.decline_code, answer.message) == (
        "card_declined",
        decline_code,
        message,
    )


async def test_gateway_rejections_map_to_decline_codes(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    fraud = await charge(gateway, "k-fraud", nonce=GATEWAY_REJECTED_FRAUD_NONCE)
    standin.reject_next("cvv")
    cvv = await charge(gateway, "k-cvv")
    standin.reject_next("avs")
    avs = await charge(gateway, "k-avs")
    incomplete = await charge(gateway, "k-5001", amount=500100)

    assert isinstance(fraud, Declined)
    assert (fraud.code, fraud.decline_code) == ("card_declined", "fraudulent")
    assert "fraud" in fraud.message
    assert isinstance(cvv, Declined)
    assert cvv.decline_code == "incorrect_cvc"
    assert isinstance(avs, Declined)
    assert avs.decline_code == "incorrect_zip"
    assert isinstance(incomplete, Declined)
    assert incomplete.decline_code == "generic_decline"
    assert standin.transactions[str(incomplete.reference)].gateway_rejection_reason == (
        "application_incomplete"
    )


async def test_a_processor_failure_is_a_processing_error(gateway: BraintreeGateway) -> None:
    answer = await charge(gateway, "k-3000", amount=300000)

    assert isinstance(answer, Declined)
    assert (answer.code, answer.decline_code) == ("processing_error", None)


@pytest.mark.parametrize(
    ("nonce", "code"),
    [(CONSUMED_NONCE, "payment_method_invalid"), ("4111111111111111", "payment_method_invalid")],
)
async def test_an_unusable_nonce_is_declined_without_echoing_it(
    gateway: BraintreeGateway, standin: BraintreeStandIn, nonce: str, code: str
) -> None:
    answer = await charge(gateway, "k-nonce", nonce=nonce)

    assert isinstance(answer, Declined)
    assert (answer.reference, answer.code) == (None, code)
    assert nonce not in answer.message
    assert standin.transactions == {}


async def test_a_sale_braintree_calls_invalid_for_our_reasons_raises(
    standin: BraintreeStandIn,
) -> None:
    gateway = gateway_for(standin, merchant_accounts={"usd": "no_such_account"})

    with pytest.raises(BraintreeConfigurationError, match="91513 on merchant_account_id"):
        await charge(gateway, "k-bad")


# --- void, refund, retrieve ---------------------------------------------------------------------


async def test_void_cancels_a_hold_and_a_retry_does_not_void_again(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    held = await approve(gateway, "k-hold", capture=False)

    first = await gateway.void(reference=held.reference, idempotency_key="k-void")
    again = await gateway.void(reference=held.reference, idempotency_key="k-void")

    assert first == again == Approved(held.reference)
    assert len(standin.recorded("void")) == 1
    assert (await gateway.retrieve(reference=held.reference)).state is ChargeState.CANCELED


async def test_void_of_a_settled_sale_is_declined(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    sale = await approve(gateway, "k-sale")
    standin.set_status(sale.reference, "settled")

    answer = await gateway.void(reference=sale.reference, idempotency_key="k-void")

    assert isinstance(answer, Declined)
    assert answer.code == "charge_not_voidable"


async def test_refund_of_a_settled_sale(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    sale = await approve(gateway, "k-sale", amount=2500)
    standin.set_status(sale.reference, "settled")

    refund = await gateway.refund(reference=sale.reference, amount=700, idempotency_key="k-r1")

    assert isinstance(refund, Approved)
    assert refund.reference != sale.reference  # the refund's own transaction
    (made,) = standin.refunds_for(sale.reference)
    assert (made.id, made.order_id, str(made.amount)) == (refund.reference, "k-r1", "7.00")
    status = await gateway.retrieve(reference=sale.reference)
    assert (status.state, status.amount_captured, status.amount_refunded) == (
        ChargeState.CAPTURED,
        2500,
        700,
    )


async def test_refund_refusals_are_declines(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    sale = await approve(gateway, "k-sale", amount=1000)
    unsettled = await gateway.refund(reference=sale.reference, amount=100, idempotency_key="k-r1")
    standin.set_status(sale.reference, "settled")
    too_much = await gateway.refund(reference=sale.reference, amount=1001, idempotency_key="k-r2")
    missing = await gateway.refund(reference="nosuchtx", amount=100, idempotency_key="k-r3")

    assert isinstance(unsettled, Declined)
    assert unsettled.code == "charge_not_settled"
    assert isinstance(too_much, Declined)
    assert too_much.code == "refund_exceeds_charge"
    assert isinstance(missing, Declined)
    assert (missing.reference, missing.code) == ("nosuchtx", "resource_missing")
    assert standin.refunds_for(sale.reference) == []


async def test_capture_refusals_are_declines(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    held = await approve(gateway, "k-hold", amount=1000, capture=False)
    too_much = await gateway.capture(reference=held.reference, amount=1001, idempotency_key="c1")
    standin.set_status(held.reference, "voided")
    voided = await gateway.capture(reference=held.reference, amount=1000, idempotency_key="c2")

    assert isinstance(too_much, Declined)
    assert too_much.code == "amount_too_large"
    assert isinstance(voided, Declined)
    assert voided.code == "charge_not_capturable"
    assert len(standin.recorded("submit_for_settlement")) == 1  # the voided one was not tried


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("authorized", ChargeState.AUTHORIZED),
        ("submitted_for_settlement", ChargeState.CAPTURED),
        ("settling", ChargeState.CAPTURED),
        ("settled", ChargeState.CAPTURED),
        ("settlement_pending", ChargeState.CAPTURED),
        ("voided", ChargeState.CANCELED),
        ("authorization_expired", ChargeState.CANCELED),
        ("settlement_declined", ChargeState.FAILED),
    ],
)
async def test_retrieve_maps_every_status(
    gateway: BraintreeGateway, standin: BraintreeStandIn, status: str, state: ChargeState
) -> None:
    sale = await approve(gateway, "k-sale", amount=1234, capture=False)
    standin.set_status(sale.reference, status)

    found = await gateway.retrieve(reference=sale.reference)

    assert (found.reference, found.state) == (sale.reference, state)
    assert found.amount_captured == (1234 if state is ChargeState.CAPTURED else 0)
    assert (found.decline is not None) == (state is ChargeState.FAILED)


async def test_retrieve_of_a_decline_carries_the_decline(gateway: BraintreeGateway) -> None:
    declined = await charge(gateway, "k-decl", amount=200100)

    found = await gateway.retrieve(reference=str(declined.reference))

    assert found.state is ChargeState.FAILED
    assert found.decline == declined


async def test_retrieve_of_an_unknown_transaction_raises_lookup_error(
    gateway: BraintreeGateway,
) -> None:
    with pytest.raises(TransactionNotFound):
        await gateway.retrieve(reference="nosuchtx")
    assert issubclass(TransactionNotFound, LookupError)


async def test_confirm_action_only_rereads_the_sale(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    held = await approve(gateway, "k-hold", capture=False)

    answer = await gateway.confirm_action(
        reference=held.reference, capture=False, idempotency_key="k-confirm"
    )

    assert answer == held
    assert standin.requests[-1].operation == "find"


# --- idempotency ---------------------------------------------------------------------------------


async def test_a_sale_whose_answer_was_lost_is_found_not_charged_again(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    standin.drop_after_charge(1)
    with pytest.raises(GatewayTimeout):
        await charge(gateway, "strongroom-op_lost")
    assert standin.sales_for("strongroom-op_lost") == 1

    retried = await charge(gateway, "strongroom-op_lost")

    assert isinstance(retried, Approved)
    assert retried.captured
    assert standin.sales_for("strongroom-op_lost") == 1
    (sale_id,) = standin.transactions
    assert retried.reference == sale_id
    assert len(standin.recorded("sale")) == 1


async def test_a_repeated_authorize_gives_the_first_answer(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    held = await approve(gateway, "k-hold", capture=False)
    declined = await charge(gateway, "k-decl", nonce=PROCESSOR_DECLINED_NONCE)
    # The hold is captured meanwhile: a replay still answers what the authorize answered.
    await gateway.capture(reference=held.reference, amount=1050, idempotency_key="k-cap")

    assert await charge(gateway, "k-hold", capture=False) == held
    assert await charge(gateway, "k-decl", nonce=PROCESSOR_DECLINED_NONCE) == declined
    assert len(standin.recorded("sale")) == 2


async def test_a_sale_hidden_from_search_and_rejected_as_duplicate_is_found(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    """Search lags the sale, our retry goes out, and Braintree's duplicate checking rejects it:
    the adapter looks again and answers with the first sale instead of a decline."""
    standin.duplicate_checking = True
    standin.drop_after_charge(1)
    with pytest.raises(GatewayTimeout):
        await charge(gateway, "k-dup")
    standin.hide_from_search(1)

    retried = await charge(gateway, "k-dup")

    assert isinstance(retried, Approved)
    assert standin.transactions[retried.reference].status == "submitted_for_settlement"
    assert standin.sales_for("k-dup") == 2  # the first sale and the rejected retry
    assert standin.charges_for("k-dup") == 1


async def test_a_timed_out_sale_that_happened_late_is_found(standin: BraintreeStandIn) -> None:
    gateway = gateway_for(standin, timeout=0.2)
    standin.hang_next(1, operation="sale")
    with pytest.raises(GatewayTimeout):
        await charge(gateway, "k-late")
    standin.release()  # the held sale now goes through, unanswered

    retried = await charge(gateway, "k-late")

    assert isinstance(retried, Approved)
    assert standin.charges_for("k-late") == 1
    assert len(standin.recorded("sale")) == 1


async def test_a_refund_whose_answer_was_lost_is_found_not_made_again(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    sale = await approve(gateway, "k-sale")
    standin.set_status(sale.reference, "settled")
    standin.drop_after_charge(1, operation="refund")
    with pytest.raises(GatewayTimeout):
        await gateway.refund(reference=sale.reference, amount=500, idempotency_key="k-ref")

    retried = await gateway.refund(reference=sale.reference, amount=500, idempotency_key="k-ref")

    (made,) = standin.refunds_for(sale.reference)
    assert retried == Approved(made.id)
    assert len(standin.recorded("refund")) == 1


async def test_a_capture_whose_answer_was_lost_is_not_submitted_again(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    held = await approve(gateway, "k-hold", capture=False)
    standin.drop_after_charge(1, operation="submit_for_settlement")
    with pytest.raises(GatewayTimeout):
        await gateway.capture(reference=held.reference, amount=1050, idempotency_key="k-cap")

    retried = await gateway.capture(reference=held.reference, amount=1050, idempotency_key="k-cap")

    assert retried == Approved(held.reference, captured=True)
    assert len(standin.recorded("submit_for_settlement")) == 1


# --- transport errors ----------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


async def test_connection_refused_is_not_reached(standin: BraintreeStandIn) -> None:
    gateway = gateway_for(standin, base_url=f"http://127.0.0.1:{_closed_port()}")

    with pytest.raises(GatewayNotReached):
        await charge(gateway, "k-refused")
    assert not issubclass(GatewayNotReached, GatewayOutcomeUnknown)


async def test_a_name_that_does_not_resolve_is_not_reached(standin: BraintreeStandIn) -> None:
    gateway = gateway_for(standin, base_url="http://strongroom-standin.invalid:8080")

    with pytest.raises(GatewayNotReached):
        await gateway.retrieve(reference="bt000001")


async def test_a_read_timeout_is_a_timeout(standin: BraintreeStandIn) -> None:
    gateway = gateway_for(standin, timeout=0.2)
    standin.hang_next(1, operation="find")

    with pytest.raises(GatewayTimeout):
        await gateway.retrieve(reference="bt000001")
    standin.release()


async def test_a_connection_dropped_after_sending_is_a_timeout_not_unreached(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    standin.drop_after_charge(1)

    with pytest.raises(GatewayTimeout) as raised:
        await charge(gateway, "k-drop")
    assert not isinstance(raised.value, GatewayNotReached)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_errors_are_gateway_server_errors(
    gateway: BraintreeGateway, standin: BraintreeStandIn, status: int
) -> None:
    standin.fail_next(1, status, operation="sale")

    with pytest.raises(GatewayServerError):
        await charge(gateway, "k-5xx")
    assert standin.transactions == {}  # the stand-in refused before acting

    retried = await charge(gateway, "k-5xx")  # and the same key then charges once
    assert isinstance(retried, Approved)
    assert standin.charges_for("k-5xx") == 1


async def test_wrong_keys_are_rejected_credentials_without_the_key_in_the_message(
    standin: BraintreeStandIn,
) -> None:
    gateway = gateway_for(standin, private_key="not-the-private-key")

    with pytest.raises(BraintreeCredentialsRejected) as raised:
        await charge(gateway, "k-keys")

    assert "not-the-private-key" not in str(raised.value)
    assert "not-the-private-key" not in repr(gateway)
    assert not isinstance(raised.value, GatewayOutcomeUnknown | GatewayNotReached)
    assert not standin.requests[0].authenticated
    assert standin.transactions == {}


async def test_a_key_for_another_merchant_is_rejected(standin: BraintreeStandIn) -> None:
    gateway = gateway_for(standin, merchant_id="someone_else")

    with pytest.raises(BraintreeCredentialsRejected, match="403"):
        await gateway.retrieve(reference="bt000001")


def test_only_braintrees_environments_or_a_plain_http_stand_in_are_accepted() -> None:
    keys: dict[str, Any] = {"merchant_id": "m", "public_key": "p", "private_key": "s"}
    with pytest.raises(ValueError, match="sandbox"):
        BraintreeGateway(environment="development", **keys)
    with pytest.raises(ValueError, match="plain http"):
        BraintreeGateway(base_url="https://127.0.0.1:8443", **keys)
    assert "production" in repr(BraintreeGateway(environment="production", **keys))


# --- webhooks ------------------------------------------------------------------------------------


def sdk_for(standin: BraintreeStandIn, *, private_key: str | None = None) -> Any:
    """The SDK as the sender: Braintree signs notifications with the merchant's key pair."""
    environment = braintree.Environment("stand-in", "127.0.0.1", "1", standin.url, False, None)
    return braintree.BraintreeGateway(
        braintree.Configuration(
            environment=environment,
            merchant_id=standin.merchant_id,
            public_key=standin.public_key,
            private_key=private_key or standin.private_key,
        )
    )


def sample(standin: BraintreeStandIn, kind: str, subject_id: str, **keys: Any) -> tuple[str, str]:
    made = sdk_for(standin, **keys).webhook_testing.sample_notification(kind, subject_id)
    return str(made["bt_signature"]), bytes(made["bt_payload"]).decode("ascii")


def test_a_signed_notification_parses(gateway: BraintreeGateway, standin: BraintreeStandIn) -> None:
    signature, payload = sample(standin, "transaction_settled", "bt000042")

    notification = parse_braintree_webhook(gateway, signature, payload)

    assert notification.kind == "transaction_settled"
    assert (notification.subject_type, notification.subject_id) == ("transaction", "bt000042")
    assert notification.transaction_id == "bt000042"
    assert notification.timestamp.tzinfo is UTC
    assert abs(notification.timestamp - datetime.now(UTC)) < timedelta(minutes=5)


def test_a_dispute_names_its_transaction(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    notification = parse_braintree_webhook(gateway, *sample(standin, "dispute_opened", "dp_1"))

    assert (notification.subject_type, notification.subject_id) == ("dispute", "dp_1")
    assert notification.transaction_id is not None


def test_a_check_notification_has_no_subject(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    """Braintree sends `check` when a webhook URL is set up: it must parse, and name nothing."""
    notification = parse_braintree_webhook(gateway, *sample(standin, "check", ""))

    assert notification.kind == "check"
    assert (notification.subject_type, notification.subject_id) == (None, None)
    assert notification.transaction_id is None


def test_the_dedupe_key_names_one_notification(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    """Braintree notifications carry no id: a redelivery (the same payload) must get the same
    key, another notification another key."""
    settled = sample(standin, "transaction_settled", "bt000042")
    declined = sample(standin, "transaction_settlement_declined", "bt000042")

    first = parse_braintree_webhook(gateway, *settled)
    redelivered = parse_braintree_webhook(gateway, *settled)
    other = parse_braintree_webhook(gateway, *declined)

    assert len(first.dedupe_key) == 64
    assert first.dedupe_key == redelivered.dedupe_key
    assert first.dedupe_key != other.dedupe_key


def test_an_altered_signature_or_payload_is_refused(
    gateway: BraintreeGateway, standin: BraintreeStandIn
) -> None:
    signature, payload = sample(standin, "transaction_settled", "bt000042")
    public, digest = signature.split("|")
    altered_digest = f"{public}|{'0' if digest[0] != '0' else '1'}{digest[1:]}"
    _, other_payload = sample(standin, "transaction_settled", "bt000099")
    _, forged = sample(standin, "transaction_settled", "bt000042", private_key="guessed")

    for bad_signature, bad_payload in [
        (altered_digest, payload),
        (signature, other_payload),
        (forged, payload),
        (f"another_public_key|{digest}", payload),
    ]:
        with pytest.raises(WebhookSignatureInvalid) as raised:
            parse_braintree_webhook(gateway, bad_signature, bad_payload)
        assert raised.value.reason
        assert standin.private_key not in raised.value.reason
