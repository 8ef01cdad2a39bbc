"""The Braintree gateway: the Gateway port on the official `braintree` SDK, and the parser for
Braintree's webhook notifications.

Braintree's XML API takes no idempotency header, so our idempotency key travels as the
transaction's `order_id` and every call that moves money first looks for what an earlier attempt
with the same key already did (see `BraintreeGateway`).

Exceptions raised here, beside the port's (`GatewayNotReached`, `GatewayOutcomeUnknown` and its
`GatewayTimeout` / `GatewayServerError`):

    BraintreeConfigurationError        no retry can help; nothing was charged; an operator acts
     └── BraintreeCredentialsRejected  401 / 403 / 426: the keys, their permissions, the SDK
    TransactionNotFound (LookupError)  retrieve() of an id Braintree does not know
    WebhookSignatureInvalid            a notification that Braintree did not sign
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

import braintree  # type: ignore[import-untyped]
from braintree.exceptions import (  # type: ignore[import-untyped]
    AuthenticationError,
    AuthorizationError,
    GatewayTimeoutError,
    InvalidSignatureError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnexpectedError,
    UpgradeRequiredError,
)
from braintree.exceptions.http.connection_error import (  # type: ignore[import-untyped]
    ConnectionError as SdkConnectionError,
)
from braintree.exceptions.http.timeout_error import (  # type: ignore[import-untyped]
    ConnectTimeoutError as SdkConnectTimeoutError,
)
from braintree.exceptions.http.timeout_error import (
    TimeoutError as SdkTimeoutError,
)
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from strongroom.adapters.gateways.port import (
    ChargeState,
    ChargeStatus,
    GatewayNotReached,
    GatewayOutcomeUnknown,
    GatewayServerError,
    GatewayTimeout,
)
from strongroom.domain.model import Approved, Declined, GatewayAnswer
from strongroom.domain.money import exponent

__all__ = [
    "BraintreeConfigurationError",
    "BraintreeCredentialsRejected",
    "BraintreeGateway",
    "BraintreeNotification",
    "TransactionNotFound",
    "WebhookSignatureInvalid",
    "parse_braintree_webhook",
]

T = TypeVar("T")

# The SDK is untyped: its transactions and results are plain attribute bags.
Transaction = Any


class BraintreeConfigurationError(Exception):
    """Braintree refused the request for a reason no retry can fix: our credentials, our
    merchant set-up or a request of ours it calls invalid. Nothing was charged. Deliberately
    neither a GatewayOutcomeUnknown (the recovery loop would retry it forever) nor a
    GatewayNotReached (a payment would silently fail over and hide the misconfiguration)."""


class BraintreeCredentialsRejected(BraintreeConfigurationError):
    """401 (wrong public/private key pair), 403 (the key may not do this, or not for this
    merchant) or 426 (Braintree no longer accepts this SDK version)."""


class TransactionNotFound(LookupError):
    """Braintree has no transaction with this id."""


class WebhookSignatureInvalid(Exception):
    """The notification's signature does not match its payload under our keys: it was not sent
    by Braintree for this merchant, or it was altered on the way."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Braintree's vocabulary, in the port's terms ------------------------------------------------

_AUTHORIZED = "authorized"
_VOIDED = "voided"
# Money is (or was) on its way to the merchant.
_CAPTURED: Final = frozenset(
    {
        "submitted_for_settlement",
        "settling",
        "settled",
        "settlement_pending",
        "settlement_confirmed",
    }
)
_CANCELED: Final = frozenset({_VOIDED, "authorization_expired"})
_FAILED: Final = frozenset(
    {
        "processor_declined",
        "gateway_rejected",
        "failed",
        "settlement_declined",
        "settlement_failed",
    }
)
# A transaction in one of these states was approved when it was created, whatever happened to
# it since (a later void, an expiry, a settlement decline).
_WAS_APPROVED: Final = (
    _CAPTURED | _CANCELED | {_AUTHORIZED, "settlement_declined", "settlement_failed"}
)

# Braintree processor response codes → Stripe's decline codes (what last_payment_error shows).
_PROCESSOR_DECLINES: Final = {
    "2000": "do_not_honor",
    "2001": "insufficient_funds",
    "2002": "card_velocity_exceeded",  # Limit Exceeded
    "2003": "card_velocity_exceeded",  # Cardholder's Activity Limit Exceeded
    "2004": "expired_card",
    "2005": "incorrect_number",
    "2010": "incorrect_cvc",  # Card Issuer Declined CVV
    "2012": "lost_card",
    "2013": "stolen_card",
    "2014": "fraudulent",
    "2015": "transaction_not_allowed",
    "2047": "pickup_card",
}
# Braintree's own risk rules (gateway_rejection_reason) → Stripe's decline codes.
_REJECTIONS: Final = {
    "cvv": "incorrect_cvc",
    "avs": "incorrect_zip",  # AVS rejections are, in practice, postal-code mismatches
    "avs_and_cvv": "incorrect_cvc",
    "fraud": "fraudulent",
    "risk_threshold": "fraudulent",
    "duplicate": "duplicate_transaction",
    "three_d_secure": "authentication_required",
}
# Validation errors on a sale that mean "this nonce cannot be charged": the customer's side, so a
# decline the checkout can show, not a bug of ours.
_NONCE_UNUSABLE: Final = frozenset(
    {
        "91564",  # PaymentMethodNonceConsumed
        "91565",  # PaymentMethodNonceUnknown
        "91566",  # PaymentMethodNonceLocked
        "91569",  # PaymentMethodNonceHasNoValidPaymentInstrumentType
    }
)
_CARD_TYPE_NOT_ACCEPTED = "91567"
# Validation errors on capture, void and refund → our decline codes (the sandbox's where shared).
_REFUSALS: Final = {
    "91507": "charge_not_capturable",  # CannotSubmitForSettlement
    "91522": "amount_too_large",  # SettlementAmountIsTooLarge
    "91504": "charge_not_voidable",  # CannotBeVoided
    "91506": "charge_not_settled",  # CannotRefundUnlessSettled
    "91574": "charge_not_settled",  # CannotRefundSettlingTransaction
    "91505": "charge_not_refundable",  # CannotRefundCredit
    "91512": "charge_already_refunded",  # HasAlreadyBeenRefunded
    "91521": "refund_exceeds_charge",  # RefundAmountIsTooLarge
}

_ENVIRONMENTS: Final = {
    "sandbox": braintree.Environment.Sandbox,
    "production": braintree.Environment.Production,
}


class BraintreeGateway:
    """Charges through Braintree for one set of credentials (one merchant_id and key pair); make
    one instance per set, since the SDK object holds its HTTP sessions.

    Idempotency. Braintree's XML API has no idempotency header, so:
    - a sale and a refund carry our idempotency key as their `order_id`, and are preceded by a
      transaction search on that `order_id`: if an earlier attempt already created the sale (or
      the refund of this transaction), its answer is returned and nothing is sent again;
    - a capture (submit_for_settlement) and a void act on one transaction id, so they re-read
      the transaction first: one already submitted (or voided) answers Approved without acting.
    What this cannot stop is two processes searching at the same instant, both finding nothing
    and both charging. Strongroom never does that: one operation is driven by one process at a
    time (the request that started it, or, after a grace period, the recovery loop holding the
    operation's lease). A search index that lags behind a sale that just happened is the other
    gap: if Braintree's duplicate checking then rejects our second sale as a duplicate, the
    adapter searches again and answers with the first sale.

    Currency. A Braintree merchant account has one currency. `merchant_accounts` maps a
    currency (ISO code, any case) to the merchant account id that settles in it; with a mapping,
    an unmapped currency is refused before anything is sent. Without one, no merchant account is
    sent and Braintree uses the merchant's default account; if that account turns out to charge
    in another currency, authorize raises BraintreeConfigurationError naming the transaction (an
    operator must void it), rather than booking money in the wrong currency.

    3-D Secure happens in Braintree's Drop-in, in the browser, before the nonce exists, so
    authorize never answers ActionRequired; confirm_action only re-reads the transaction.

    Errors. Connection refused, name not resolved or a connect timeout: GatewayNotReached (the
    request never left). A read timeout, or a connection reset after the request was sent:
    GatewayTimeout. A 5xx or 429: GatewayServerError. An answer that cannot be read:
    GatewayOutcomeUnknown. 401/403/426: BraintreeCredentialsRejected. A sale Braintree calls
    invalid for a reason other than the nonce: BraintreeConfigurationError.

    Keys and nonces are never logged, and never appear in an exception message or in repr().
    """

    name = "braintree"

    def __init__(
        self,
        *,
        merchant_id: str,
        public_key: str,
        private_key: str,
        environment: str = "sandbox",
        base_url: str | None = None,
        timeout: float = 30.0,
        merchant_accounts: Mapping[str, str] | None = None,
    ) -> None:
        """`base_url` (plain http, e.g. a local stand-in in tests) overrides `environment`."""
        if environment not in _ENVIRONMENTS:
            raise ValueError(f"environment must be 'sandbox' or 'production', not {environment!r}")
        self._environment_name = environment if base_url is None else "stand-in"
        self._merchant_id = merchant_id
        self._merchant_accounts = {c.upper(): m for c, m in (merchant_accounts or {}).items()}
        env = _ENVIRONMENTS[environment] if base_url is None else _plain_http_environment(base_url)
        self._sdk: Any = braintree.BraintreeGateway(
            braintree.Configuration(
                environment=env,
                merchant_id=merchant_id,
                public_key=public_key,
                private_key=private_key,
                timeout=timeout,
                # The SDK's own exception types, each wrapping the HTTP library's original,
                # which is what tells "never connected" from "sent, then lost".
                wrap_http_exceptions=True,
            )
        )

    def __repr__(self) -> str:
        return f"BraintreeGateway(merchant_id={self._merchant_id!r}, {self._environment_name})"

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
        """A sale of the nonce `payment_method`, submitted for settlement when `capture`."""
        params: dict[str, Any] = {
            "amount": _major_units(amount, currency),
            "payment_method_nonce": payment_method,
            "order_id": idempotency_key,
            "options": {"submit_for_settlement": capture},
        }
        if self._merchant_accounts:
            account = self._merchant_accounts.get(currency.upper())
            if account is None:
                raise BraintreeConfigurationError(
                    f"No Braintree merchant account is configured for {currency.upper()}."
                )
            params["merchant_account_id"] = account

        earlier = await self._call(lambda: self._search_sale(idempotency_key))
        if earlier is not None:
            return self._checked_sale_answer(earlier, currency, capture)
        result = await self._call(lambda: self._sdk.transaction.sale(params))
        if result.is_success:
            return self._checked_sale_answer(result.transaction, currency, capture)
        tx = result.transaction
        if tx is not None:
            if tx.status == "gateway_rejected" and _attr(tx, "gateway_rejection_reason") == (
                "duplicate"
            ):
                # Our own first attempt may be the "duplicate", not yet visible to the search
                # we made before sending: look once more.
                earlier = await self._call(lambda: self._search_sale(idempotency_key))
                if earlier is not None:
                    return self._checked_sale_answer(earlier, currency, capture)
            return _sale_answer(tx, capture)
        codes = _error_codes(result)
        if codes & _NONCE_UNUSABLE:
            # The nonce is not echoed: a careless caller may have put a card number there.
            return Declined(
                None,
                "payment_method_invalid",
                None,
                "The payment method nonce is unknown, expired or already used; tokenize the "
                "card again.",
            )
        if _CARD_TYPE_NOT_ACCEPTED in codes:
            return Declined(
                None, "card_declined", "card_not_supported", "This card type is not accepted."
            )
        raise BraintreeConfigurationError(
            f"Braintree refused the sale as invalid: {_describe_errors(result)}"
        )

    async def confirm_action(
        self, *, reference: str, capture: bool, idempotency_key: str
    ) -> GatewayAnswer:
        """Braintree never waits on a challenge after the sale (3-D Secure runs in the Drop-in
        before the nonce exists), so there is nothing to confirm: the answer is the sale's."""
        tx = await self._find(reference)
        return _sale_answer(tx, capture)

    async def capture(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        """submit_for_settlement, unless an earlier attempt already submitted it."""
        try:
            tx = await self._find(reference)
        except TransactionNotFound:
            return _missing(reference)
        if tx.status in _CAPTURED:
            return Approved(tx.id, captured=True)
        if tx.status != _AUTHORIZED:
            return Declined(
                reference,
                "charge_not_capturable",
                None,
                f"The transaction is {tx.status}; only an authorized one can be captured.",
            )
        settle = _major_units(amount, tx.currency_iso_code)
        result = await self._call(
            lambda: self._sdk.transaction.submit_for_settlement(reference, settle),
            transaction_id=reference,
        )
        if result.is_success:
            return Approved(result.transaction.id, captured=True)
        return _refusal(reference, result, "charge_not_capturable")

    async def void(self, *, reference: str, idempotency_key: str) -> GatewayAnswer:
        """Void, unless an earlier attempt already did."""
        try:
            tx = await self._find(reference)
        except TransactionNotFound:
            return _missing(reference)
        if tx.status == _VOIDED:
            return Approved(tx.id)
        result = await self._call(
            lambda: self._sdk.transaction.void(reference), transaction_id=reference
        )
        if result.is_success:
            return Approved(result.transaction.id)
        return _refusal(reference, result, "charge_not_voidable")

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> GatewayAnswer:
        """A refund carrying our key as its order_id, unless an earlier attempt made it. The
        answer's reference is the refund's own transaction id. Braintree refunds only a settled
        transaction: an unsettled one is declined with `charge_not_settled` (void it instead)."""
        earlier = await self._call(lambda: self._search_refund(idempotency_key, reference))
        if earlier is not None:
            return _refund_answer(earlier)
        try:
            original = await self._find(reference)
        except TransactionNotFound:
            return _missing(reference)
        options = {
            "amount": _major_units(amount, original.currency_iso_code),
            "order_id": idempotency_key,
        }
        result = await self._call(
            lambda: self._sdk.transaction.refund(reference, options), transaction_id=reference
        )
        if result.is_success:
            return _refund_answer(result.transaction)
        if result.transaction is not None:
            return _refund_answer(result.transaction)
        return _refusal(reference, result, "charge_not_refundable")

    async def retrieve(self, *, reference: str) -> ChargeStatus:
        """The transaction now, with the sum of its refunds (each read, never cached). Raises
        TransactionNotFound for an unknown id, and GatewayOutcomeUnknown while Braintree is
        still authorizing (there is no state yet to report)."""
        tx = await self._find(reference)
        status = tx.status
        currency = tx.currency_iso_code
        refunded = 0
        for refund_id in _attr(tx, "refund_ids") or ():
            refund = await self._find(str(refund_id))
            if refund.status not in _FAILED and refund.status != _VOIDED:
                refunded += _minor_units(refund.amount, currency)
        if status == _AUTHORIZED:
            state = ChargeState.AUTHORIZED
        elif status in _CAPTURED:
            state = ChargeState.CAPTURED
        elif status in _CANCELED:
            state = ChargeState.CANCELED
        elif status in _FAILED:
            decline = _decline(tx)
            return ChargeStatus(
                tx.id, ChargeState.FAILED, amount_refunded=refunded, decline=decline
            )
        else:
            raise GatewayOutcomeUnknown(f"braintree: transaction {tx.id} is {status}")
        captured = _minor_units(tx.amount, currency) if state is ChargeState.CAPTURED else 0
        return ChargeStatus(tx.id, state, amount_captured=captured, amount_refunded=refunded)

    # --- internals -----------------------------------------------------------------------------
    async def _call(self, fn: Callable[[], T], *, transaction_id: str | None = None) -> T:
        """Run one blocking SDK call in a worker thread, in the port's error terms."""
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            translated = _translate(exc, transaction_id)
            if translated is None:
                raise
            raise translated from exc

    async def _find(self, transaction_id: str) -> Transaction:
        return await self._call(
            lambda: self._sdk.transaction.find(transaction_id), transaction_id=transaction_id
        )

    def _search(self, order_id: str) -> list[Transaction]:
        """Every transaction whose order_id is exactly `order_id` (blocking)."""
        found = self._sdk.transaction.search(braintree.TransactionSearch.order_id == order_id)
        return [tx for tx in found.items if _attr(tx, "order_id") == order_id]

    def _search_sale(self, order_id: str) -> Transaction | None:
        return _first_approved(tx for tx in self._search(order_id) if _attr(tx, "type") == "sale")

    def _search_refund(self, order_id: str, refunded_id: str) -> Transaction | None:
        return _first_approved(
            tx
            for tx in self._search(order_id)
            if _attr(tx, "type") == "credit" and _attr(tx, "refunded_transaction_id") == refunded_id
        )

    def _checked_sale_answer(self, tx: Transaction, currency: str, capture: bool) -> GatewayAnswer:
        answer = _sale_answer(tx, capture)
        charged_in = str(_attr(tx, "currency_iso_code") or "").upper()
        if isinstance(answer, Approved) and charged_in and charged_in != currency.upper():
            raise BraintreeConfigurationError(
                f"Braintree charged transaction {tx.id} in {charged_in}, not {currency.upper()}: "
                "map the currency to a merchant account (merchant_accounts), and void or refund "
                f"{tx.id} in Braintree."
            )
        return answer


# --- answers -------------------------------------------------------------------------------------


def _sale_answer(tx: Transaction, capture: bool) -> GatewayAnswer:
    """The answer a sale gave. For a sale found again, `capture` (the same on every retry of one
    operation) tells what the first answer said, whatever happened to the sale since."""
    status = tx.status
    if status in _WAS_APPROVED:
        return Approved(tx.id, captured=capture and status != _AUTHORIZED)
    if status in _FAILED:
        return _decline(tx)
    raise GatewayOutcomeUnknown(f"braintree: transaction {tx.id} is {status}")


def _decline(tx: Transaction) -> Declined:
    status = tx.status
    text = str(_attr(tx, "processor_response_text") or "")
    if status == "processor_declined":
        code = str(_attr(tx, "processor_response_code") or "")
        decline_code = _PROCESSOR_DECLINES.get(code, "generic_decline")
        return Declined(tx.id, "card_declined", decline_code, text or "The card was declined.")
    if status == "gateway_rejected":
        reason = str(_attr(tx, "gateway_rejection_reason") or "unknown")
        return Declined(
            tx.id,
            "card_declined",
            _REJECTIONS.get(reason, "generic_decline"),
            f"Braintree rejected the transaction ({reason}).",
        )
    if status in {"settlement_declined", "settlement_failed"}:
        return Declined(tx.id, "settlement_declined", None, text or "Settlement was declined.")
    return Declined(tx.id, "processing_error", None, text or "The processor failed.")


def _refund_answer(tx: Transaction) -> GatewayAnswer:
    if tx.status in _FAILED:
        message = str(_attr(tx, "processor_response_text") or "") or "The refund failed."
        return Declined(tx.id, "refund_failed", None, message)
    return Approved(tx.id)


def _refusal(reference: str, result: Any, fallback: str) -> Declined:
    """A capture, void or refund Braintree refused with a validation error."""
    codes = _error_codes(result)
    code = next((_REFUSALS[c] for c in sorted(codes) if c in _REFUSALS), fallback)
    return Declined(reference, code, None, str(result.message))


def _missing(reference: str) -> Declined:
    return Declined(reference, "resource_missing", None, "No such Braintree transaction.")


def _first_approved(candidates: Iterable[Transaction]) -> Transaction | None:
    """The transaction that moved money if there is one (a duplicate rejection of our own retry
    may sit beside it), else the latest."""
    ordered = sorted(candidates, key=lambda tx: str(_attr(tx, "created_at") or ""))
    approved = [tx for tx in ordered if tx.status in _WAS_APPROVED]
    if approved:
        return approved[0]
    return ordered[-1] if ordered else None


def _error_codes(result: Any) -> set[str]:
    return {str(error.code) for error in result.errors.deep_errors}


def _describe_errors(result: Any) -> str:
    """Codes and field names only: Braintree's messages are safe, but values never appear."""
    errors = [f"{error.code} on {error.attribute}" for error in result.errors.deep_errors]
    return ", ".join(errors) or str(result.message)


def _attr(obj: Any, name: str) -> Any:
    """An attribute the SDK sets only when the answer carried the field."""
    return getattr(obj, name, None)


# --- errors --------------------------------------------------------------------------------------

_HTTP_STATUS = re.compile(r"HTTP_RESPONSE (\d{3})")


def _translate(exc: Exception, transaction_id: str | None) -> Exception | None:
    """The port's exception for an SDK failure; None for anything else (a bug of ours)."""
    if isinstance(exc, AuthenticationError):
        return BraintreeCredentialsRejected("Braintree refused the public/private key pair (401).")
    if isinstance(exc, AuthorizationError):
        return BraintreeCredentialsRejected(
            "Braintree refused this key permission for the request (403)."
        )
    if isinstance(exc, UpgradeRequiredError):
        return BraintreeCredentialsRejected("Braintree no longer accepts this SDK version (426).")
    if isinstance(exc, NotFoundError):
        if transaction_id is not None:
            return TransactionNotFound(f"braintree: no transaction {transaction_id!r}")
        return BraintreeConfigurationError("Braintree answered 404: check the merchant_id.")
    if isinstance(exc, ServerError | ServiceUnavailableError | GatewayTimeoutError):
        return GatewayServerError(f"braintree: {type(exc).__name__} (5xx)")
    if isinstance(exc, TooManyRequestsError):
        return GatewayServerError("braintree: 429 Too Many Requests")
    if isinstance(exc, RequestTimeoutError):
        return GatewayTimeout("braintree: the request timed out at Braintree")
    if isinstance(exc, SdkConnectTimeoutError):
        return GatewayNotReached("braintree: timed out connecting")
    if isinstance(exc, SdkTimeoutError):
        return GatewayTimeout("braintree: no answer in time")
    if isinstance(exc, SdkConnectionError):
        if _never_connected(exc):
            return GatewayNotReached("braintree: could not connect")
        return GatewayTimeout("braintree: the connection was lost before the answer")
    if isinstance(exc, UnexpectedError):
        status = _HTTP_STATUS.search(str(exc))
        if status is not None and status.group(1).startswith("5"):
            return GatewayServerError(f"braintree: HTTP {status.group(1)}")
        return GatewayOutcomeUnknown(f"braintree: unexpected answer ({type(exc).__name__})")
    if isinstance(exc, ExpatError):
        return GatewayOutcomeUnknown("braintree: an answer that is not XML")
    return None


def _never_connected(exc: BaseException) -> bool:
    """Whether the failure happened while opening the connection (refused, name not resolved,
    connect timeout), so the request cannot have been sent. The SDK wraps the HTTP library's
    exception, which wraps urllib3's: walk the chain."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # NameResolutionError is a NewConnectionError; both are ConnectTimeoutErrors in urllib3 2.
        if isinstance(current, NewConnectionError | ConnectTimeoutError):
            return True
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return False


# --- money ---------------------------------------------------------------------------------------


def _major_units(amount: int, currency: str) -> str:
    """Minor units → Braintree's decimal string in major units ("10.50", JPY "1050")."""
    places = exponent(currency)
    return format(Decimal(amount).scaleb(-places), "f")


def _minor_units(value: Any, currency: str) -> int:
    scaled = Decimal(str(value)).scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise GatewayOutcomeUnknown(f"braintree: amount {value} has too many decimals")
    return int(scaled)


def _plain_http_environment(base_url: str) -> Any:
    """A braintree.Environment for a local stand-in. The SDK speaks https only to port 443, so
    the URL must be plain http with an explicit other port."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname is None or parts.port in (None, 443):
        raise ValueError("base_url must look like http://HOST:PORT (plain http, not port 443)")
    return braintree.Environment(
        "strongroom-stand-in", parts.hostname, str(parts.port), base_url, False, None
    )


# --- webhooks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BraintreeNotification:
    """A verified Braintree webhook notification, reduced to what Strongroom acts on. Like a
    Stripe event it is only a trigger: the handler re-reads the transaction (retrieve)."""

    kind: str  # e.g. "transaction_settled", "dispute_opened", "check"
    timestamp: datetime  # UTC
    subject_type: str | None  # "transaction", "dispute", "disbursement", "subscription", …
    subject_id: str | None
    transaction_id: str | None  # the transaction it concerns (a dispute's too), if any
    # Braintree notifications carry no id. The SHA-256 of the decoded payload (XML holding the
    # kind, the timestamp and the subject) names one notification: Braintree's retries send the
    # same payload, and it does not depend on how the base64 was wrapped.
    dedupe_key: str


_SUBJECTS: Final = (
    "transaction",
    "dispute",
    "disbursement",
    "subscription",
    "merchant_account",
    "transaction_review",
)


def parse_braintree_webhook(
    gateway: BraintreeGateway, bt_signature: str, bt_payload: str
) -> BraintreeNotification:
    """Verify (the SDK's HMAC-SHA1 over the payload with our private key, compared in constant
    time) and parse the `bt_signature` / `bt_payload` form fields of a notification. Raises
    WebhookSignatureInvalid when the signature does not verify. Makes no network call."""
    try:
        notification = gateway._sdk.webhook_notification.parse(bt_signature, bt_payload)
    except InvalidSignatureError as exc:
        raise WebhookSignatureInvalid(str(exc)) from None
    try:
        decoded = base64.decodebytes(bt_payload.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as exc:  # unreachable once the SDK accepted it
        raise WebhookSignatureInvalid("payload is not base64") from exc

    subject_type = next((s for s in _SUBJECTS if _attr(notification, s) is not None), None)
    subject = _attr(notification, subject_type) if subject_type else None
    subject_id = _attr(subject, "id") if subject is not None else None
    match subject_type:
        case "transaction":
            transaction_id = subject_id
        case "dispute":
            transaction_id = _attr(_attr(subject, "transaction"), "id")
        case "transaction_review":  # a review has no id of its own
            transaction_id = subject_id = _attr(subject, "transaction_id")
        case _:
            transaction_id = None
    timestamp: datetime = notification.timestamp  # the SDK parses it to a naive UTC datetime
    return BraintreeNotification(
        kind=str(notification.kind),
        timestamp=timestamp.replace(tzinfo=UTC) if timestamp.tzinfo is None else timestamp,
        subject_type=subject_type,
        subject_id=None if subject_id is None else str(subject_id),
        transaction_id=None if transaction_id is None else str(transaction_id),
        dedupe_key=hashlib.sha256(decoded).hexdigest(),
    )
