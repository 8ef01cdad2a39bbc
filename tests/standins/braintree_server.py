"""A Braintree stand-in: a real HTTP server on 127.0.0.1 (an ephemeral port, in a thread) that
speaks the XML subset of Braintree's gateway API which the official SDK sends for our adapter.

Tests point the real SDK at it (BraintreeGateway(base_url=standin.url)) because the real
sandbox cannot be reached from here. It follows Braintree's documented sandbox conventions (test
nonces, test amounts, error codes), records every request for assertions, and can be told to
fail in the ways a network fails. What it serves:

    POST /merchants/{mid}/transactions                              sale
    PUT  /merchants/{mid}/transactions/{id}/submit_for_settlement   capture
    PUT  /merchants/{mid}/transactions/{id}/void
    POST /merchants/{mid}/transactions/{id}/refund
    GET  /merchants/{mid}/transactions/{id}                         find
    POST /merchants/{mid}/transactions/advanced_search_ids          search (order_id, ids)
    POST /merchants/{mid}/transactions/advanced_search              search page

and, for the demo checkout in a browser, a stand-in Drop-in (tests/standins/browser_libraries.py)
and the card tokenization it calls with the tokenization key:

    GET  /web/dropin/{version}/js/dropin.min.js
    POST /client_api/v1/payment_methods/credit_cards                a test card → its test nonce
"""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from tests.standins.browser_libraries import DROPIN_JS

# --- Braintree's sandbox conventions ------------------------------------------------------------

VALID_NONCE = "fake-valid-nonce"
PROCESSOR_DECLINED_NONCE = "fake-processor-declined-visa-nonce"
GATEWAY_REJECTED_FRAUD_NONCE = "fake-gateway-rejected-fraud-nonce"
CONSUMED_NONCE = "fake-consumed-nonce"
# Braintree's test card numbers, for the stand-in Drop-in, as the nonces they tokenize to.
TEST_CARD_NONCES = {
    "4111111111111111": "fake-valid-visa-nonce",
    "4000111111111115": PROCESSOR_DECLINED_NONCE,
}

_DECLINE_TEXTS = {
    2000: "Do Not Honor",
    2001: "Insufficient Funds",
    2002: "Limit Exceeded",
    2004: "Expired Card",
    2005: "Invalid Credit Card Number",
    2010: "Card Issuer Declined CVV",
    2014: "Processor Declined - Fraud Suspected",
    2015: "Transaction Not Allowed",
}
# Error codes (braintree.ErrorCodes.Transaction), with the messages Braintree gives.
_ERRORS = {
    "81502": ("amount", "Amount is required."),
    "81503": ("amount", "Amount is an invalid format."),
    "91504": (
        "base",
        "Transaction can only be voided if status is authorized, "
        "submitted_for_settlement, or - for PayPal - settlement_pending.",
    ),
    "91506": ("base", "Cannot refund transaction unless it is settled."),
    "91507": ("base", "Cannot submit for settlement unless status is authorized."),
    "91512": ("base", "Transaction has already been completely refunded."),
    "91513": ("merchant_account_id", "Merchant account ID is invalid."),
    "91521": ("amount", "Refund amount cannot be more than the authorized amount."),
    "91522": ("amount", "Settlement amount cannot be more than the authorized amount."),
    "91564": ("payment_method_nonce", "Cannot use a payment_method_nonce more than once."),
    "91565": ("payment_method_nonce", "Unknown payment_method_nonce."),
}
_CAPTURED = {"submitted_for_settlement", "settling", "settled", "settlement_pending"}
_MONEY_MOVED = _CAPTURED | {"authorized", "voided", "authorization_expired"}


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it. The Authorization header is not kept: only
    whether it carried the right key pair."""

    method: str
    path: str
    operation: str
    body: dict[str, Any]
    headers: dict[str, str]
    authenticated: bool

    @property
    def order_id(self) -> str | None:
        tx = self.body.get("transaction")
        value = tx.get("order_id") if isinstance(tx, dict) else None
        return value if isinstance(value, str) else None


@dataclass
class Txn:
    id: str
    type: str  # "sale" or "credit"
    status: str
    amount: Decimal
    currency: str
    merchant_account_id: str
    order_id: str | None
    nonce: str | None = None
    processor_response_code: str | None = "1000"
    processor_response_text: str | None = "Approved"
    gateway_rejection_reason: str | None = None
    refunded_transaction_id: str | None = None
    refund_ids: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class _Fault:
    kind: str  # "status", "drop" (act, then close without answering), "hang" (wait, act, drop)
    operation: str | None  # None: any
    status: int = 500


class _Refused(Exception):
    """A Braintree validation error: answered 422 with an api-error-response."""

    def __init__(self, code: str, scope: str = "transaction") -> None:
        super().__init__(code)
        self.code = code
        self.scope = scope


class BraintreeStandIn:
    """Start with `with BraintreeStandIn(...) as standin:`; `standin.url` is its base URL."""

    def __init__(
        self,
        *,
        merchant_id: str = "strongroom_merchant",
        public_key: str = "standin_public",
        private_key: str = "standin_private",
        merchant_accounts: dict[str, str] | None = None,
        default_merchant_account: str = "strongroom_usd",
        tokenization_key: str = "sandbox_standin_tokenization",
    ) -> None:
        self.merchant_id = merchant_id
        self.tokenization_key = tokenization_key
        self.public_key = public_key
        self.private_key = private_key
        self.merchant_accounts = merchant_accounts or {"strongroom_usd": "USD"}
        self.default_merchant_account = default_merchant_account
        self.duplicate_checking = False
        self.requests: list[Recorded] = []
        self.transactions: dict[str, Txn] = {}
        self._expected_auth = b"Basic " + base64.b64encode(f"{public_key}:{private_key}".encode())
        self._ids = (f"bt{n:06d}" for n in itertools.count(1))
        self._faults: deque[_Fault] = deque()
        self._hidden_searches = 0
        self._reject_next: deque[str] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._hung_done = threading.Semaphore(0)
        self._hung = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> BraintreeStandIn:
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        # A short poll interval: shutdown() waits for the serving loop to notice it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> BraintreeStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- fault injection -----------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, *, operation: str | None = None) -> None:
        """Answer the next `n` requests (of `operation`, if given) with `status` and an empty
        body, without acting."""
        with self._lock:
            self._faults.extend(_Fault("status", operation, status) for _ in range(n))

    def drop_after_charge(self, n: int = 1, *, operation: str = "sale") -> None:
        """Act on the next `n` requests of `operation` (a sale by default), then close the
        connection without answering: the client cannot know whether it happened."""
        with self._lock:
            self._faults.extend(_Fault("drop", operation) for _ in range(n))

    def hang_next(self, n: int = 1, *, operation: str | None = None) -> None:
        """Hold the next `n` requests until `release()`; they then act and close without
        answering (the client has timed out by then)."""
        with self._lock:
            self._released.clear()
            self._faults.extend(_Fault("hang", operation) for _ in range(n))
            self._hung += n

    def release(self) -> None:
        """Let held requests go on, and return once each has acted (every hang queued must
        have been reached by a request)."""
        self._released.set()
        with self._lock:
            held, self._hung = self._hung, 0
        for _ in range(held):
            if not self._hung_done.acquire(timeout=10):
                raise TimeoutError("a held request did not finish")

    def hide_from_search(self, n: int = 1) -> None:
        """The next `n` searches find nothing, as Braintree's search index may lag a sale."""
        with self._lock:
            self._hidden_searches += n

    def reject_next(self, reason: str) -> None:
        """The next sale with an approvable nonce is gateway_rejected for `reason` (cvv, avs,
        fraud…), as Braintree's risk rules would."""
        with self._lock:
            self._reject_next.append(reason)

    # --- state, for tests ----------------------------------------------------------------------
    def sales_for(self, order_id: str) -> int:
        """How many sale transactions exist with this order_id, whatever their status."""
        with self._lock:
            return sum(
                1 for t in self.transactions.values() if t.type == "sale" and t.order_id == order_id
            )

    def charges_for(self, order_id: str) -> int:
        """How many sales with this order_id were approved (moved, or held, money)."""
        with self._lock:
            return sum(
                1
                for t in self.transactions.values()
                if t.type == "sale" and t.order_id == order_id and t.status in _MONEY_MOVED
            )

    def refunds_for(self, transaction_id: str) -> list[Txn]:
        with self._lock:
            return [self.transactions[r] for r in self.transactions[transaction_id].refund_ids]

    def recorded(self, operation: str) -> list[Recorded]:
        return [r for r in self.requests if r.operation == operation]

    def set_status(self, transaction_id: str, status: str) -> None:
        """Move a transaction as time would: settle it, expire its authorization…"""
        with self._lock:
            self.transactions[transaction_id].status = status

    # --- the API -------------------------------------------------------------------------------
    def handle(self, handler: _Handler) -> None:
        method = handler.command
        path = handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if method == "GET" and re.fullmatch(r"/web/dropin/[^/]+/js/dropin\.min\.js", path):
            handler.answer(200, DROPIN_JS, "application/javascript")
            return
        if method == "POST" and path == "/client_api/v1/payment_methods/credit_cards":
            handler.answer(*self._tokenize(raw), "application/json")
            return
        body = _parse_xml(raw) if raw.strip() else {}
        operation, mid, txn_id = _route(method, path)
        authenticated = hmac.compare_digest(
            handler.headers.get("Authorization", "").encode(), self._expected_auth
        )
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "authorization"}
        with self._lock:
            self.requests.append(Recorded(method, path, operation, body, headers, authenticated))
            fault = self._take_fault(operation)
        if not authenticated:
            handler.answer(401, "")
            return
        if mid != self.merchant_id:
            handler.answer(403, "")
            return
        if fault is not None and fault.kind == "status":
            handler.answer(fault.status, "")
            return
        if fault is not None and fault.kind == "hang":
            self._released.wait()
        status, xml = self._outcome(operation, txn_id, body)
        if fault is not None and fault.kind == "hang":
            self._hung_done.release()
        if fault is not None:  # drop or hang: acted, never answered
            handler.close_connection = True
            return
        handler.answer(status, xml)

    def _tokenize(self, raw: bytes) -> tuple[int, str]:
        """Drop-in's card tokenization: a test card number becomes Braintree's test nonce for
        it; a wrong tokenization key is 401, any other number 422, as Braintree answers."""
        try:
            body = json.loads(raw)
            key, number = body["authorization"], body["number"]
        except (ValueError, KeyError, TypeError):
            return 400, json.dumps({"error": {"message": "Malformed request."}})
        if not isinstance(key, str) or not hmac.compare_digest(key, self.tokenization_key):
            return 401, json.dumps({"error": {"message": "Authorization failed."}})
        nonce = TEST_CARD_NONCES.get(number) if isinstance(number, str) else None
        if nonce is None:
            return 422, json.dumps({"error": {"message": "Credit card number is invalid."}})
        return 201, json.dumps({"nonce": nonce})

    def _outcome(self, operation: str, txn_id: str | None, body: dict[str, Any]) -> tuple[int, str]:
        try:
            return self._act(operation, txn_id, body)
        except _Refused as refused:
            return 422, _error_xml(refused)
        except _DeclinedSale as declined:
            return 422, _declined_xml(declined.tx)
        except _NotFound:
            return 404, ""
        except _BadRequest:
            return 400, ""

    def _take_fault(self, operation: str) -> _Fault | None:
        for fault in self._faults:
            if fault.operation in (None, operation):
                self._faults.remove(fault)
                return fault
        return None

    def _act(self, operation: str, txn_id: str | None, body: dict[str, Any]) -> tuple[int, str]:
        with self._lock:
            match operation:
                case "sale":
                    return 201, self._sale(body.get("transaction") or {})
                case "find":
                    return 200, _txn_xml(self._get(txn_id))
                case "submit_for_settlement":
                    return 200, self._submit(self._get(txn_id), body.get("transaction") or {})
                case "void":
                    return 200, self._void(self._get(txn_id))
                case "refund":
                    return 201, self._refund(self._get(txn_id), body.get("transaction") or {})
                case "search_ids":
                    return 200, self._search_ids(body.get("search") or {})
                case "search":
                    return 200, self._search_page(body.get("search") or {})
                case _:
                    raise _NotFound

    def _get(self, txn_id: str | None) -> Txn:
        if txn_id is None or txn_id not in self.transactions:
            raise _NotFound
        return self.transactions[txn_id]

    def _sale(self, params: dict[str, Any]) -> str:
        if params.get("type") != "sale":
            raise _BadRequest
        account = params.get("merchant_account_id") or self.default_merchant_account
        if account not in self.merchant_accounts:
            raise _Refused("91513")
        currency = self.merchant_accounts[account]
        amount = _amount(params.get("amount"), currency, required=True)
        assert amount is not None
        nonce = params.get("payment_method_nonce")
        if nonce == CONSUMED_NONCE:
            raise _Refused("91564")
        if not isinstance(nonce, str) or not (
            re.fullmatch(r"fake-valid(-[a-z0-9-]+)?-nonce", nonce)
            or nonce in (PROCESSOR_DECLINED_NONCE, GATEWAY_REJECTED_FRAUD_NONCE)
        ):
            raise _Refused("91565")
        options = params.get("options") or {}
        tx = Txn(
            id=next(self._ids),
            type="sale",
            status="authorized",
            amount=amount,
            currency=currency,
            merchant_account_id=account,
            order_id=params.get("order_id"),
            nonce=nonce,
        )
        if nonce == PROCESSOR_DECLINED_NONCE:
            _decline(tx, 2000)
        elif nonce == GATEWAY_REJECTED_FRAUD_NONCE:
            _reject(tx, "fraud")
        elif self._reject_next:
            _reject(tx, self._reject_next.popleft())
        elif self.duplicate_checking and any(
            t.type == "sale"
            and t.nonce == nonce
            and t.amount == amount
            and t.status in _MONEY_MOVED
            for t in self.transactions.values()
        ):
            _reject(tx, "duplicate")
        elif Decimal(2000) <= amount < Decimal(3000):
            _decline(tx, int(amount))
        elif Decimal(3000) <= amount < Decimal(3001):
            tx.status = "failed"
            tx.processor_response_code = "3000"
            tx.processor_response_text = "Processor Network Unavailable - Try Again"
        elif amount == Decimal("5001.00"):
            _reject(tx, "application_incomplete")
        elif options.get("submit_for_settlement") is True:
            tx.status = "submitted_for_settlement"
        self.transactions[tx.id] = tx
        if tx.status in ("processor_declined", "gateway_rejected", "failed"):
            raise _DeclinedSale(tx)
        return _txn_xml(tx)

    def _submit(self, tx: Txn, params: dict[str, Any]) -> str:
        if tx.type != "sale" or tx.status != "authorized":
            raise _Refused("91507")
        amount = _amount(params.get("amount"), tx.currency, required=False)
        if amount is not None:
            if amount > tx.amount:
                raise _Refused("91522")
            tx.amount = amount
        tx.status = "submitted_for_settlement"
        return _txn_xml(tx)

    def _void(self, tx: Txn) -> str:
        if tx.status not in ("authorized", "submitted_for_settlement", "settlement_pending"):
            raise _Refused("91504")
        tx.status = "voided"
        return _txn_xml(tx)

    def _refund(self, tx: Txn, params: dict[str, Any]) -> str:
        if tx.type != "sale" or tx.status not in ("settled", "settling"):
            raise _Refused("91506")
        refunded = sum(
            (
                self.transactions[r].amount
                for r in tx.refund_ids
                if self.transactions[r].status not in ("voided", "processor_declined")
            ),
            Decimal(0),
        )
        remaining = tx.amount - refunded
        if remaining <= 0:
            raise _Refused("91512")
        amount = _amount(params.get("amount"), tx.currency, required=False) or remaining
        if amount > remaining:
            raise _Refused("91521")
        refund = Txn(
            id=next(self._ids),
            type="credit",
            status="submitted_for_settlement",
            amount=amount,
            currency=tx.currency,
            merchant_account_id=tx.merchant_account_id,
            order_id=params.get("order_id"),
            refunded_transaction_id=tx.id,
        )
        self.transactions[refund.id] = refund
        tx.refund_ids.append(refund.id)
        return _txn_xml(refund)

    def _matching(self, criteria: dict[str, Any]) -> list[Txn]:
        found = list(self.transactions.values())
        for name, value in criteria.items():
            if name == "order_id" and isinstance(value, dict) and set(value) == {"is"}:
                found = [t for t in found if t.order_id == value["is"]]
            elif name == "ids" and isinstance(value, list):
                found = [t for t in found if t.id in value]
            else:
                raise _BadRequest  # a criterion the stand-in does not implement: fail loudly
        return found

    def _search_ids(self, criteria: dict[str, Any]) -> str:
        found = self._matching(criteria)
        if self._hidden_searches:
            self._hidden_searches -= 1
            found = []
        return _element(
            "search-results",
            {"page-size": 50, "ids": [t.id for t in found]},
        )

    def _search_page(self, criteria: dict[str, Any]) -> str:
        found = self._matching(criteria)
        inner = "".join(_txn_xml(t, declaration=False) for t in found)
        return f'{_DECLARATION}<credit-card-transactions type="collection">{inner}' + (
            "</credit-card-transactions>"
        )


class _NotFound(Exception):
    pass


class _BadRequest(Exception):
    pass


class _DeclinedSale(Exception):
    """A sale that was recorded but not approved: Braintree answers 422 with the transaction."""

    def __init__(self, tx: Txn) -> None:
        super().__init__(tx.id)
        self.tx = tx


def _decline(tx: Txn, code: int) -> None:
    tx.status = "processor_declined"
    tx.processor_response_code = str(code)
    tx.processor_response_text = _DECLINE_TEXTS.get(code, "Processor Declined")


def _reject(tx: Txn, reason: str) -> None:
    tx.status = "gateway_rejected"
    tx.processor_response_code = None
    tx.processor_response_text = None
    tx.gateway_rejection_reason = reason


def _amount(value: Any, currency: str, *, required: bool) -> Decimal | None:
    """Braintree's amount format: a decimal string with no more places than the currency."""
    if value in (None, ""):
        if required:
            raise _Refused("81502")
        return None
    places = 0 if currency in ("JPY", "KRW") else 3 if currency in ("KWD", "BHD") else 2
    pattern = r"\d+" + (rf"(\.\d{{1,{places}}})?" if places else "")
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise _Refused("81503")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise _Refused("81503") from None
    if amount <= 0:
        raise _Refused("81503")
    return amount


# --- routing and HTTP ----------------------------------------------------------------------------

_ROUTES = [
    ("POST", re.compile(r"/merchants/([^/]+)/transactions"), "sale"),
    ("POST", re.compile(r"/merchants/([^/]+)/transactions/advanced_search_ids"), "search_ids"),
    ("POST", re.compile(r"/merchants/([^/]+)/transactions/advanced_search"), "search"),
    ("GET", re.compile(r"/merchants/([^/]+)/transactions/([^/]+)"), "find"),
    (
        "PUT",
        re.compile(r"/merchants/([^/]+)/transactions/([^/]+)/submit_for_settlement"),
        "submit_for_settlement",
    ),
    ("PUT", re.compile(r"/merchants/([^/]+)/transactions/([^/]+)/void"), "void"),
    ("POST", re.compile(r"/merchants/([^/]+)/transactions/([^/]+)/refund"), "refund"),
]


def _route(method: str, path: str) -> tuple[str, str | None, str | None]:
    """(operation, merchant id, transaction id) for a request line."""
    for verb, pattern, operation in _ROUTES:
        match = pattern.fullmatch(path)
        if verb == method and match is not None:
            groups = match.groups()
            return operation, groups[0], groups[1] if len(groups) > 1 else None
    return "unknown", None, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        standin: BraintreeStandIn,
    ) -> None:
        super().__init__(address, handler)
        self.standin = standin


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a dropped connection drops only that request.
    server_version = "BraintreeStandIn/1"

    def _serve(self) -> None:
        cast(_Server, self.server).standin.handle(self)

    do_GET = do_POST = do_PUT = _serve

    def answer(self, status: int, text: str, content_type: str = "application/xml") -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        if content_type != "application/xml":  # the browser's calls, from the checkout's origin
            self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on `requests`, not on a log."""


# --- XML -----------------------------------------------------------------------------------------

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _parse_xml(raw: bytes) -> dict[str, Any]:
    """The SDK's request body as a dict (tags with '-' or '_' both give '_' keys)."""
    # Bytes our own test client sent over loopback: no untrusted XML is parsed here.
    root = ET.fromstring(raw)  # noqa: S314
    return {root.tag.replace("-", "_"): _node(root)}


def _node(element: ET.Element) -> Any:
    kind = element.get("type")
    children = list(element)
    if kind == "array":
        return [_node(child) for child in children]
    if children:
        return {child.tag.replace("-", "_"): _node(child) for child in children}
    text = element.text or ""
    if kind == "boolean":
        return text == "true"
    if kind == "integer":
        return int(text)
    return text


def _element(tag: str, value: Any) -> str:
    return _DECLARATION + _xml(tag, value)


def _xml(tag: str, value: Any) -> str:
    if value is None:
        return f'<{tag} nil="true"/>'
    if isinstance(value, bool):
        return f'<{tag} type="boolean">{str(value).lower()}</{tag}>'
    if isinstance(value, int):
        return f'<{tag} type="integer">{value}</{tag}>'
    if isinstance(value, datetime):
        return f'<{tag} type="datetime">{value.strftime("%Y-%m-%dT%H:%M:%SZ")}</{tag}>'
    if isinstance(value, list):
        return f'<{tag} type="array">' + "".join(_xml("item", v) for v in value) + f"</{tag}>"
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_xml(k, v) for k, v in value.items()) + f"</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _txn_fields(tx: Txn) -> Iterator[tuple[str, Any]]:
    yield "id", tx.id
    yield "type", tx.type
    yield "status", tx.status
    yield "amount", str(tx.amount)
    yield "currency-iso-code", tx.currency
    yield "merchant-account-id", tx.merchant_account_id
    yield "order-id", tx.order_id
    yield "processor-response-code", tx.processor_response_code
    yield "processor-response-text", tx.processor_response_text
    yield "gateway-rejection-reason", tx.gateway_rejection_reason
    yield "refund-ids", list(tx.refund_ids)
    yield "refunded-transaction-id", tx.refunded_transaction_id
    yield "created-at", tx.created_at
    yield "updated-at", datetime.now(UTC)


def _txn_xml(tx: Txn, *, declaration: bool = True) -> str:
    body = _xml("transaction", dict(_txn_fields(tx)))
    return _DECLARATION + body if declaration else body


def _error_xml(refused: _Refused) -> str:
    attribute, message = _ERRORS[refused.code]
    error = (
        f"<error><code>{refused.code}</code>"
        f'<attribute type="symbol">{attribute}</attribute>'
        f"<message>{escape(message)}</message></error>"
    )
    return (
        f'{_DECLARATION}<api-error-response><errors><errors type="array"/>'
        f'<{refused.scope}><errors type="array">{error}</errors></{refused.scope}>'
        f"</errors><message>{escape(message)}</message></api-error-response>"
    )


def _declined_xml(tx: Txn) -> str:
    message = tx.processor_response_text or f"Gateway Rejected: {tx.gateway_rejection_reason}"
    return (
        f'{_DECLARATION}<api-error-response><errors><errors type="array"/></errors>'
        f"<message>{escape(message)}</message>{_txn_xml(tx, declaration=False)}"
        "</api-error-response>"
    )
