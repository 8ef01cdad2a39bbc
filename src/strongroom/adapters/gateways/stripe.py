"""The Stripe gateway: the Gateway port over Stripe's PaymentIntents API through the official
`stripe` SDK (its async methods, over httpx), and the check of Stripe's webhook signatures.

How failures come out (the port's terms; see port.py):

- no connection was made (refused, name not resolved, connect timeout, TLS handshake refused):
  GatewayNotReached. Not a byte of the request was sent, so nothing can have been charged.
- the request went out but no answer came (read or write timeout, connection dropped):
  GatewayTimeout. Stripe may have acted; retry with the same idempotency key.
- 5xx or 429: GatewayServerError; 409 (the same key is still running at Stripe): the base
  GatewayOutcomeUnknown. Retry with the same key.
- a card error (402) and the invalid-request errors that are about the charge rather than the
  request (its state, its amounts, an unknown card token): a Declined answer.
- any other 4xx (bad or unknown parameters, a key reused with other parameters, a wrong API
  key, a reference Stripe does not know): StripeRequestRejected. That is a bug or a
  misconfiguration in Strongroom: retrying cannot help and another gateway would not fix it,
  so it is neither GatewayOutcomeUnknown nor GatewayNotReached.

The SDK's own retries are off (`max_network_retries=0`): Strongroom retries with the same key
from its recovery loop, which survives a crash. Neither the secret key nor the card token is
ever put in a log line or an exception message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import httpx
import stripe

from strongroom.adapters.gateways.port import (
    ChargeState,
    ChargeStatus,
    GatewayNotReached,
    GatewayOutcomeUnknown,
    GatewayServerError,
    GatewayTimeout,
)
from strongroom.domain.model import ActionRequired, Approved, Declined, GatewayAnswer

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams

__all__ = [
    "StripeGateway",
    "StripeRequestRejected",
    "WebhookSignatureInvalid",
    "verify_stripe_webhook",
]

# The SDK logs each request body (which carries the card token) at DEBUG, and Stripe's error
# messages (which can quote the token) at INFO, through the "stripe" logger; Strongroom's log
# set-up would pass them on. Only its warnings get out. (Its STRIPE_LOG environment variable,
# which prints to stderr directly, must stay unset in production.)
logging.getLogger("stripe").setLevel(logging.WARNING)

# httpx failures that happen before a request's first byte is written: the gateway cannot
# have acted. ConnectError also covers a refused TLS handshake and a name that did not resolve.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

# invalid_request_error codes that are Stripe's answer about the charge (its state or its
# amounts), not a mistake in our request: Strongroom's own checks passed, Stripe's record
# disagreed. They become Declined, so the operation fails cleanly.
_STATE_CODES = frozenset(
    {
        "payment_intent_unexpected_state",
        "payment_intent_authentication_failure",
        "payment_intent_payment_attempt_failed",
        "payment_intent_payment_attempt_expired",
        "charge_already_captured",
        "charge_already_refunded",
        "charge_disputed",
        "charge_expired_for_capture",
        "amount_too_large",
        "amount_too_small",
    }
)

_NO_SUCH_PAYMENT_METHOD = "No such payment method; use a card token from Stripe.js or a pm_ id."


class StripeRequestRejected(Exception):
    """Stripe refused a request Strongroom should not have sent: a 4xx that is not about the
    card or the charge (an unknown or invalid parameter, an idempotency key reused with other
    parameters, a wrong API key, an unknown reference), or an answer Strongroom cannot act on
    (a 3-D Secure step with no page to send the customer to: configure `return_url`). Nothing
    was done at Stripe. Stripe's own message is left out: it can quote the token we sent."""

    def __init__(
        self,
        what: str,
        *,
        status: int | None,
        error_type: str | None,
        code: str | None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.error_type = error_type
        self.code = code
        self.param = param
        self.request_id = request_id
        super().__init__(
            f"stripe refused {what}: HTTP {status} {error_type} code={code} param={param} "
            f"request={request_id}"
        )


class WebhookSignatureInvalid(Exception):
    """A Stripe webhook delivery failed verification; `reason` is short and never quotes a
    secret or a signature."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StripeGateway:
    """Charges through Stripe. `base_url` None means api.stripe.com; tests give a stand-in's
    http://127.0.0.1:PORT. `return_url` is where Stripe sends the customer back after a 3-D
    Secure redirect: with it Stripe answers `redirect_to_url`; without it, `use_stripe_sdk`,
    whose challenge URL (`stripe_js`) is used when Stripe gives one."""

    name = "stripe"

    def __init__(
        self,
        *,
        secret_key: str,
        base_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        return_url: str | None = None,
    ) -> None:
        self._return_url = return_url
        self._http = stripe.HTTPXClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout)
        )
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": base_url.rstrip("/")} if base_url else None,
            max_network_retries=0,
            http_client=self._http,
        )

    def __repr__(self) -> str:  # never the key
        return f"<StripeGateway name={self.name!r}>"

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # the SDK's, untyped

    # --- the port ------------------------------------------------------------------------------
    async def authorize(
        self,
        *,
        payment_method: str,
        amount: int,
        currency: str,
        capture: bool,
        idempotency_key: str,
    ) -> GatewayAnswer:
        """Create and confirm a PaymentIntent in one request. A `tok_…` card token becomes the
        PaymentMethod through payment_method_data; a `pm_…` id is used as it is.
        `payment_method_types=["card"]` keeps Stripe from demanding a return_url for
        redirecting payment methods we never offer."""
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "confirm": True,
            "capture_method": "automatic" if capture else "manual",
            "payment_method_types": ["card"],
        }
        if payment_method.startswith("tok_"):
            # Stripe accepts a legacy card token here; the SDK's typed params do not list it.
            params["payment_method_data"] = {"type": "card", "card": {"token": payment_method}}
        else:
            params["payment_method"] = payment_method
        if self._return_url:
            params["return_url"] = self._return_url
        result = await self._send(
            "payment_intents.create",
            None,
            lambda: self._client.v1.payment_intents.create_async(
                cast("PaymentIntentCreateParams", params),
                {"idempotency_key": idempotency_key},
            ),
            authorizing=True,
        )
        return result if isinstance(result, Declined) else _intent_answer(result)

    async def confirm_action(
        self, *, reference: str, capture: bool, idempotency_key: str
    ) -> GatewayAnswer:
        """After the customer's 3-D Secure, Stripe finishes the payment itself: read the
        PaymentIntent and answer from it. Only an intent still waiting for confirmation is
        confirmed again, with our key. `capture` was fixed when the intent was created."""
        intent = await self._send(
            "payment_intents.retrieve",
            reference,
            lambda: self._client.v1.payment_intents.retrieve_async(reference),
        )
        if isinstance(intent, Declined):
            return intent
        if intent.get("status") == "requires_confirmation":
            confirm_params: dict[str, Any] = {}
            if self._return_url:
                confirm_params["return_url"] = self._return_url
            confirmed = await self._send(
                "payment_intents.confirm",
                reference,
                lambda: self._client.v1.payment_intents.confirm_async(
                    reference, cast(Any, confirm_params), {"idempotency_key": idempotency_key}
                ),
            )
            if isinstance(confirmed, Declined):
                return confirmed
            intent = confirmed
        return _intent_answer(intent)

    async def capture(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        intent = await self._send(
            "payment_intents.capture",
            reference,
            lambda: self._client.v1.payment_intents.capture_async(
                reference, {"amount_to_capture": amount}, {"idempotency_key": idempotency_key}
            ),
        )
        if isinstance(intent, Declined):
            return intent
        if intent.get("status") == "succeeded":
            return Approved(reference, captured=True)
        return _unexpected(reference, intent)

    async def void(self, *, reference: str, idempotency_key: str) -> GatewayAnswer:
        intent = await self._send(
            "payment_intents.cancel",
            reference,
            lambda: self._client.v1.payment_intents.cancel_async(
                reference, None, {"idempotency_key": idempotency_key}
            ),
        )
        if isinstance(intent, Declined):
            return intent
        if intent.get("status") == "canceled":
            return Approved(reference)
        return _unexpected(reference, intent)

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        """A `pending` refund counts as approved, as at Stripe it nearly always succeeds; one
        that fails later is reported by Stripe's `charge.refund.updated` webhook."""
        refund = await self._send(
            "refunds.create",
            reference,
            lambda: self._client.v1.refunds.create_async(
                {"payment_intent": reference, "amount": amount},
                {"idempotency_key": idempotency_key},
            ),
        )
        if isinstance(refund, Declined):
            return refund
        refund_id = str(refund.get("id"))
        if refund.get("status") in ("failed", "canceled"):
            reason = _text(refund.get("failure_reason")) or "refund_failed"
            return Declined(refund_id, reason, None, "Stripe could not complete the refund.")
        return Approved(refund_id)

    async def retrieve(self, *, reference: str) -> ChargeStatus:
        """The PaymentIntent now, with its latest charge expanded for the refunded amount.
        Raises LookupError for a reference Stripe does not know, and GatewayOutcomeUnknown
        while Stripe is still `processing` it (ask again later)."""
        try:
            intent = await self._send(
                "payment_intents.retrieve",
                reference,
                lambda: self._client.v1.payment_intents.retrieve_async(
                    reference, {"expand": ["latest_charge"]}
                ),
            )
        except StripeRequestRejected as exc:
            if exc.status == 404 and exc.code == "resource_missing":
                raise LookupError(f"stripe: no payment intent {reference!r}") from exc
            raise
        if isinstance(intent, Declined):  # reading never declines; Stripe answered oddly
            raise GatewayOutcomeUnknown(f"stripe: could not read {reference}: {intent.code}")
        return _charge_status(reference, intent)

    # --- internals -----------------------------------------------------------------------------
    async def _send(
        self,
        what: str,
        reference: str | None,
        call: Callable[[], Awaitable[stripe.StripeObject]],
        *,
        authorizing: bool = False,
    ) -> dict[str, Any] | Declined:
        """Make one SDK call and answer with the object as a plain dict (a StripeObject is not
        a mapping), or put its failure in the port's terms (see the module doc)."""
        try:
            return (await call()).to_dict()
        except stripe.APIConnectionError as exc:
            raise _connection_failure(what, exc) from None
        except stripe.CardError as exc:
            return _card_declined(exc, reference)
        except stripe.InvalidRequestError as exc:
            declined = _request_declined(exc, reference, authorizing=authorizing)
            if declined is not None:
                return declined
            raise _rejected(what, exc) from None
        except stripe.StripeError as exc:
            status = exc.http_status
            if status is not None and (status >= 500 or status == 429):
                raise GatewayServerError(
                    f"stripe: {what}: HTTP {status} (request {exc.request_id})"
                ) from None
            if status is None or status < 400 or status == 409:
                # An answer we could not read, or the same key still running at Stripe.
                raise GatewayOutcomeUnknown(
                    f"stripe: {what}: unusable answer, HTTP {status} (request {exc.request_id})"
                ) from None
            raise _rejected(what, exc) from None


def _connection_failure(what: str, exc: stripe.APIConnectionError) -> Exception:
    """The SDK wraps every httpx failure in one APIConnectionError; the httpx exception it
    was raised from says whether the request went out."""
    cause = exc.__cause__
    kind = type(cause).__name__ if cause is not None else "unknown"
    if isinstance(cause, _NOT_SENT):
        return GatewayNotReached(f"stripe: {what}: not reached ({kind})")
    return GatewayTimeout(f"stripe: {what}: no answer ({kind})")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_fields(exc: stripe.StripeError) -> dict[str, Any]:
    return exc.error.to_dict() if exc.error is not None else {}


def _card_declined(exc: stripe.CardError, reference: str | None) -> Declined:
    error = _error_fields(exc)
    intent = error.get("payment_intent")
    return Declined(
        _text(intent.get("id")) if isinstance(intent, Mapping) else reference,
        _text(exc.code) or "card_declined",
        _text(error.get("decline_code")),
        _text(error.get("message")) or "Your card was declined.",
    )


def _request_declined(
    exc: stripe.InvalidRequestError, reference: str | None, *, authorizing: bool
) -> Declined | None:
    """The invalid-request errors that are an answer about the charge or the card, as
    Declined; None for the rest (our mistakes)."""
    error = _error_fields(exc)
    param = _text(error.get("param")) or ""
    if authorizing and (param == "payment_method" or param.startswith("payment_method_data")):
        # An unknown or unusable token or PaymentMethod: the merchant's input, not our bug.
        # Stripe's message quotes the token, so the sandbox's code and a fixed message stand in.
        return Declined(None, "payment_method_invalid", None, _NO_SUCH_PAYMENT_METHOD)
    code = _text(exc.code)
    if code is None or code not in _STATE_CODES:
        return None
    intent = error.get("payment_intent")
    ref = _text(intent.get("id")) if isinstance(intent, Mapping) else reference
    return Declined(ref, code, None, _text(error.get("message")) or code.replace("_", " "))


def _rejected(what: str, exc: stripe.StripeError) -> StripeRequestRejected:
    error = _error_fields(exc)
    return StripeRequestRejected(
        what,
        status=exc.http_status,
        error_type=_text(error.get("type")),
        code=_text(exc.code) or _text(error.get("code")),
        param=_text(error.get("param")),
        request_id=exc.request_id,
    )


def _last_error(reference: str, intent: Mapping[str, Any]) -> Declined | None:
    error = intent.get("last_payment_error")
    if not isinstance(error, Mapping):
        return None
    code = _text(error.get("code")) or "card_declined"
    return Declined(
        reference,
        code,
        _text(error.get("decline_code")),
        _text(error.get("message")) or code.replace("_", " "),
    )


def _unexpected(reference: str, intent: Mapping[str, Any]) -> Declined:
    status = _text(intent.get("status")) or "unknown"
    return Declined(
        reference,
        "payment_intent_unexpected_state",
        None,
        f"The PaymentIntent's status at Stripe is {status}.",
    )


def _action_url(reference: str, intent: Mapping[str, Any]) -> str:
    action = intent.get("next_action")
    action = action if isinstance(action, Mapping) else {}
    kind = _text(action.get("type"))
    details = action.get(kind) if kind is not None else None
    if isinstance(details, Mapping):
        url = _text(details.get("url")) if kind == "redirect_to_url" else None
        if kind == "use_stripe_sdk":
            url = _text(details.get("stripe_js"))
        if url is not None and url.startswith(("https://", "http://")):
            return url
    raise StripeRequestRejected(
        f"3-D Secure for {reference} (no page to send the customer to; set return_url)",
        status=None,
        error_type="unsupported_next_action",
        code=kind,
    )


def _intent_answer(intent: Mapping[str, Any]) -> GatewayAnswer:
    """A confirmed PaymentIntent's status as the port's answer."""
    reference = str(intent.get("id"))
    match intent.get("status"):
        case "succeeded":
            return Approved(reference, captured=True)
        case "requires_capture":
            return Approved(reference, captured=False)
        case "requires_action":
            return ActionRequired(reference, _action_url(reference, intent))
        case "processing":
            raise GatewayOutcomeUnknown(f"stripe: {reference} is still processing")
        case "requires_payment_method":
            return _last_error(reference, intent) or _unexpected(reference, intent)
        case _:
            return _unexpected(reference, intent)


_STATES = {
    "requires_action": ChargeState.REQUIRES_ACTION,
    "requires_confirmation": ChargeState.REQUIRES_ACTION,
    "requires_capture": ChargeState.AUTHORIZED,
    "succeeded": ChargeState.CAPTURED,
    "canceled": ChargeState.CANCELED,
    "requires_payment_method": ChargeState.FAILED,
}


def _charge_status(reference: str, intent: Mapping[str, Any]) -> ChargeStatus:
    status = _text(intent.get("status")) or "unknown"
    if status == "processing":
        raise GatewayOutcomeUnknown(f"stripe: {reference} is still processing")
    state = _STATES.get(status)
    if state is None:
        raise GatewayOutcomeUnknown(f"stripe: {reference} has an unknown status {status!r}")
    charge = intent.get("latest_charge")
    refunded = charge.get("amount_refunded") if isinstance(charge, Mapping) else 0
    received = intent.get("amount_received")
    return ChargeStatus(
        reference=reference,
        state=state,
        amount_captured=received if isinstance(received, int) else 0,
        amount_refunded=refunded if isinstance(refunded, int) else 0,
        # An intent that was never confirmed has no error to report; it still never charged.
        decline=_last_error(reference, intent) if state is ChargeState.FAILED else None,
    )


# --- webhooks ------------------------------------------------------------------------------------


def verify_stripe_webhook(
    payload: bytes,
    signature_header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = 300,
) -> dict[str, Any]:
    """Verify a delivery's `Stripe-Signature` over the raw body and return the parsed event.

    Accepted when any v1 signature in the header matches any of `secrets` (several during a
    secret's rotation) and the signed timestamp is no more than `tolerance` seconds old. The
    HMAC and its constant-time comparison are the SDK's (`WebhookSignature.verify_header` finds
    the secret, then `Webhook.construct_event` verifies and parses with it), and so is the
    clock: it reads `time.time()`, so tests sign with the current time, or with
    `time.time() - 301` for a stale delivery. Like Stripe's libraries it does not refuse a
    timestamp in the future. Raises WebhookSignatureInvalid; ValueError for a tolerance that
    is not positive (the SDK would read 0 as "no time check")."""
    if tolerance <= 0:
        raise ValueError("tolerance must be a positive number of seconds")
    if not signature_header:
        raise WebhookSignatureInvalid("missing Stripe-Signature header")
    keys = [s for s in secrets if s.strip()]
    if not keys:
        raise WebhookSignatureInvalid("no webhook secret configured")
    try:
        body = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookSignatureInvalid("body is not UTF-8") from None
    # The signature first (no time check: a falsy tolerance skips it), then the timestamp with
    # the secret that matched, so the reason says which check failed.
    matched = next((key for key in keys if _signed_with(body, signature_header, key)), None)
    if matched is None:
        raise WebhookSignatureInvalid(_why_unsigned(signature_header))
    try:
        event = stripe.Webhook.construct_event(body, signature_header, matched, tolerance)
    except stripe.SignatureVerificationError:
        raise WebhookSignatureInvalid("timestamp outside the tolerance") from None
    except ValueError:
        raise WebhookSignatureInvalid("body is not JSON") from None
    except (AttributeError, TypeError):  # JSON, but not an object the SDK can make an Event of
        raise WebhookSignatureInvalid("body is not a JSON object") from None
    parsed: dict[str, Any] = event.to_dict()
    return parsed


def _signed_with(body: str, header: str, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, 0)
    except stripe.SignatureVerificationError:
        return False
    return True


def _why_unsigned(header: str) -> str:
    """Why no secret matched, from the header's shape (the SDK parses it the same way)."""
    items = [part.split("=", 1) for part in header.split(",")]
    if not any(len(i) == 2 and i[0] == "t" and i[1].strip().isdigit() for i in items):
        return "malformed Stripe-Signature header"
    if not any(len(i) == 2 and i[0] == "v1" for i in items):
        return "no v1 signature in header"
    return "no signature matches"
