"""A stand-in for the part of Stripe's API that StripeGateway uses: a real HTTP server on
127.0.0.1 (http.server in a thread, an ephemeral port) that the official `stripe` SDK reaches
over the network, as it would reach api.stripe.com.

It speaks Stripe's form encoding and error bodies and keeps PaymentIntents, charges and refunds
in memory. Idempotency-Key is honoured as Stripe documents it: the same key with the same
request replays the first response (`Idempotent-Replayed: true`) and never acts twice; the same
key with another request is a 400 idempotency_error; the same key while the first request is
still running is a 409. Every request is recorded (method, path, headers, parsed params) for
assertions, and `charges` counts the charges made under each idempotency key.

Test cards are Stripe's test tokens (`tok_visa`, `tok_chargeDeclined`, …) and the matching
`pm_card_*` PaymentMethods. Faults, for the adapter's error mapping: `fail_next` answers
5xx/429 without acting; `drop_after_charge` acts and then closes the connection unanswered;
`hold_next` keeps a request waiting (a read timeout for the client) until `release` or `stop`.
`sign_webhook` signs a payload the way Stripe signs webhook deliveries, written here with hmac
so the SDK's verification is checked against an independent signer. For the demo checkout in a
browser it also serves a stand-in Stripe.js at /v3/ (tests/standins/browser_libraries.py) and
the /v1/payment_methods call it makes with the publishable key."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import secrets
import string
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.standins.browser_libraries import STRIPE_JS
from tests.standins.threaded import ThreadedStandIn

# How long a held request waits for `release` at most, so a forgotten hold cannot hang a run.
HOLD_LIMIT_SECONDS = 10.0

_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """Stripe-shaped ids (`pi_…`): alphanumeric, so no run of digits looks like a card number."""
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def sign_webhook(
    payload: bytes, secret: str, *, timestamp: int | None = None, scheme: str = "v1"
) -> str:
    """A `Stripe-Signature` header for `payload`: `t=<unix time>,<scheme>=<hex HMAC-SHA256 of
    "<t>.<payload>" keyed with the endpoint secret>`."""
    signed_at = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{signed_at}.".encode() + payload, hashlib.sha256)
    return f"t={signed_at},{scheme}={mac.hexdigest()}"


# --- form decoding -------------------------------------------------------------------------------

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's nested form encoding (`a[b][0]=x`) back into dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *_KEY_PART.findall("[" + rest)] if rest else [head]
        node = root
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            if parts[i + 1] == "":  # `key[]=v`: append
                parts[i + 1] = str(len(child))
            node = child
        node[parts[-1]] = value
    listed = _listify(root)
    assert isinstance(listed, dict)
    return listed


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


# --- test cards ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Card:
    decline: tuple[str, str, str] | None = None  # code, decline_code, message
    three_d_secure: bool = False
    refund_fails: bool = False


TEST_CARDS: dict[str, _Card] = {
    "visa": _Card(),
    "mastercard": _Card(),
    "chargeDeclined": _Card(
        decline=("card_declined", "generic_decline", "Your card was declined.")
    ),
    "chargeDeclinedInsufficientFunds": _Card(
        decline=("card_declined", "insufficient_funds", "Your card has insufficient funds.")
    ),
    "chargeDeclinedExpiredCard": _Card(
        decline=("expired_card", "expired_card", "Your card has expired.")
    ),
    "chargeDeclinedIncorrectCvc": _Card(
        decline=("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.")
    ),
    "chargeDeclinedProcessingError": _Card(
        decline=(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        )
    ),
    "threeDSecureRequired": _Card(three_d_secure=True),
    # Stripe's refund-failure card: its refunds fail (here at once, at Stripe a little later).
    "refundFail": _Card(refund_fails=True),
}

# Stripe's documented test card numbers, for the stand-in Stripe.js.
TEST_CARD_NUMBERS = {
    "4242424242424242": "visa",
    "5555555555554444": "mastercard",
    "4000000000000002": "chargeDeclined",
    "4000000000009995": "chargeDeclinedInsufficientFunds",
    "4000000000000069": "chargeDeclinedExpiredCard",
    "4000000000000127": "chargeDeclinedIncorrectCvc",
    "4000000000000119": "chargeDeclinedProcessingError",
    "4000002760003184": "threeDSecureRequired",
}

# Replies that are not JSON: the body key that holds the text, and its content type.
_TEXT_REPLIES = {"html": "text/html", "script": "application/javascript"}

AUTHENTICATION_FAILED = (
    "The provided PaymentMethod has failed authentication. You can provide payment_method_data "
    "or a new PaymentMethod to attempt to fulfill this PaymentIntent again."
)


# --- recorded requests and replies ---------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-cased names; Authorization is checked, never kept
    params: dict[str, Any]  # the decoded form body (POST) or query string (GET)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _FaultKind(Enum):
    FAIL = "fail"
    DROP_AFTER = "drop_after"
    HOLD = "hold"


@dataclass(frozen=True)
class _Fault:
    kind: _FaultKind
    status: int = 500


def _error(
    status: int, type_: str, message: str, *, code: str | None = None, **extra: Any
) -> _Reply:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["code"] = code
    error.update(extra)
    return _Reply(status, {"error": error})


def _unexpected_state(pi: dict[str, Any], action: str) -> _Reply:
    return _error(
        400,
        "invalid_request_error",
        f"This PaymentIntent's {action} could not be performed because it has a status of "
        f"{pi['status']}.",
        code="payment_intent_unexpected_state",
        payment_intent=pi,
    )


def _no_such(kind: str, ident: str, param: str, *, status: int = 400) -> _Reply:
    """404 for the object a URL names, 400 for one a parameter names (as Stripe answers)."""
    return _error(
        status, "invalid_request_error", f"No such {kind}: '{ident}'", code="resource_missing",
        param=param,
    )  # fmt: skip


def _amount(value: Any, param: str) -> int | _Reply:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return _error(
        400, "invalid_request_error", f"Invalid integer: {value}", code="parameter_invalid_integer",
        param=param,
    )  # fmt: skip


_CREATE_PARAMS = frozenset(
    {
        "amount",
        "currency",
        "confirm",
        "capture_method",
        "payment_method",
        "payment_method_data",
        "payment_method_types",
        "return_url",
        "expand",
        "metadata",
        "description",
    }
)
_CANCELABLE = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)


class StripeStandIn(ThreadedStandIn):
    """The server. Use as a context manager (or start/stop); `url` is what the SDK's
    `base_addresses["api"]` should be."""

    def __init__(self, *, secret_key: str, publishable_key: str = "pk_test_standin") -> None:
        self.secret_key = secret_key
        self.publishable_key = publishable_key
        self.requests: list[Recorded] = []
        self.charges: Counter[str] = Counter()  # idempotency key → charges made under it
        self.replayed: list[str] = []  # idempotency keys whose first answer was replayed
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self._charge_objects: dict[str, dict[str, Any]] = {}
        self._cards: dict[str, _Card] = {}  # payment intent id → its test card
        self._keys: dict[str, str] = {}  # payment intent id → the key that created it
        self._replies: dict[str, tuple[tuple[str, str, str], _Reply]] = {}
        self._in_flight: set[str] = set()
        self._faults: deque[_Fault] = deque()
        self._released = threading.Event()
        self._lock = threading.RLock()
        self._settled = threading.Condition(self._lock)
        self._serve(self._make_server())

    # --- test controls -------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next `n` API requests get `status` (5xx or 429) and nothing is done."""
        with self._lock:
            self._faults.extend([_Fault(_FaultKind.FAIL, status)] * n)

    def drop_after_charge(self, n: int = 1) -> None:
        """The next `n` API requests are carried out (a charge is made, the reply stored under
        the idempotency key) and then the connection is closed without an answer."""
        with self._lock:
            self._faults.extend([_Fault(_FaultKind.DROP_AFTER)] * n)

    def hold_next(self, n: int = 1) -> None:
        """The next `n` API requests wait, before acting, until `release` (or `stop`)."""
        with self._lock:
            self._released.clear()
            self._faults.extend([_Fault(_FaultKind.HOLD)] * n)

    def release(self) -> None:
        self._released.set()

    def wait_settled(self, timeout: float = HOLD_LIMIT_SECONDS) -> bool:
        """Wait until no request with an idempotency key is still being carried out (a released
        request finishing its work), so a test's retry meets the stored answer, not a 409."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._in_flight, timeout)

    def complete_challenge(self, pi_id: str, *, succeeded: bool = True) -> None:
        """The customer answers the 3-D Secure challenge (what the challenge page's form does)."""
        with self._lock:
            pi = self.payment_intents[pi_id]
            if pi["status"] != "requires_action":
                raise ValueError(f"{pi_id} is {pi['status']}, not requires_action")
            pi["next_action"] = None
            if succeeded:
                self._charge(pi, self._keys[pi_id])
            else:
                pi["status"] = "requires_payment_method"
                pi["last_payment_error"] = {
                    "type": "invalid_request_error",
                    "code": "payment_intent_authentication_failure",
                    "message": AUTHENTICATION_FAILED,
                }

    def to(self, method: str, path: str) -> list[Recorded]:
        """The recorded requests with this method and path."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def latest_charge(self, pi_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._charge_objects[self.payment_intents[pi_id]["latest_charge"]])

    # --- the HTTP side -------------------------------------------------------------------------
    def _make_server(self) -> http.server.ThreadingHTTPServer:
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as api.stripe.com

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                raw = body if method == "POST" else url.query
                params = decode_form(parse_qsl(raw, keep_blank_values=True))
                headers = {
                    k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"
                }
                request = Recorded(method, url.path, headers, params)
                reply = standin._answer(request, self.headers.get("Authorization"))
                if reply is None:  # dropped: close without a byte of answer
                    self.close_connection = True
                    return
                kind = next((k for k in _TEXT_REPLIES if k in reply.body), None)
                payload = (reply.body[kind] if kind else json.dumps(reply.body)).encode()
                try:
                    self.send_response(reply.status)
                    content_type = _TEXT_REPLIES[kind] if kind else "application/json"
                    self.send_header("Content-Type", content_type)
                    self.send_header("Request-Id", new_id("req"))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up waiting (a held request)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output to what the tests print

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def _answer(self, request: Recorded, authorization: str | None) -> _Reply | None:
        with self._lock:
            self.requests.append(request)
        if request.path == "/v3/":
            return _Reply(200, {"script": STRIPE_JS})
        if request.method == "POST" and request.path == "/v1/payment_methods":
            return self._payment_method(request.params)
        if not request.path.startswith("/v1/"):
            return self._challenge_page(request)
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.kind is _FaultKind.FAIL:
            return _error(
                fault.status,
                "invalid_request_error" if fault.status == 429 else "api_error",
                "Too many requests." if fault.status == 429 else "Something went wrong.",
                code="rate_limit" if fault.status == 429 else None,
            )
        expected = f"Bearer {self.secret_key}"
        if authorization is None or not hmac.compare_digest(authorization, expected):
            # Stripe masks the key it was sent; the stand-in does not echo it at all.
            return _error(401, "invalid_request_error", "Invalid API Key provided.")
        key = request.idempotency_key if request.method == "POST" else None
        if key is None:
            reply = self._act_after(fault, request, key)
            return None if fault is not None and fault.kind is _FaultKind.DROP_AFTER else reply
        signature = (request.method, request.path, json.dumps(request.params, sort_keys=True))
        with self._lock:
            if key in self._in_flight:
                return _error(
                    409,
                    "idempotency_error",
                    "There is currently another in-progress request using this Idempotent Key "
                    "(that probably means you submitted twice, and the other request is still "
                    "going through). Please retry your request in a moment.",
                    code="idempotency_key_in_use",
                )
            stored = self._replies.get(key)
            if stored is not None:
                first, reply = stored
                if first != signature:
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with.",
                    )
                self.replayed.append(key)
                return _Reply(reply.status, reply.body, {"Idempotent-Replayed": "true"})
            self._in_flight.add(key)
        try:
            reply = self._act_after(fault, request, key)
            with self._lock:
                self._replies[key] = (signature, reply)
        finally:
            with self._lock:
                self._in_flight.discard(key)
                self._settled.notify_all()
        return None if fault is not None and fault.kind is _FaultKind.DROP_AFTER else reply

    def _act_after(self, fault: _Fault | None, request: Recorded, key: str | None) -> _Reply:
        if fault is not None and fault.kind is _FaultKind.HOLD:
            self._released.wait(HOLD_LIMIT_SECONDS)
        with self._lock:
            return self._route(request, key)

    def _challenge_page(self, request: Recorded) -> _Reply:
        """The 3-D Secure page the customer is sent to: GET shows it, POST answers it."""
        match = re.fullmatch(r"/3ds/(pi_\w+)", request.path)
        if match is None or match.group(1) not in self.payment_intents:
            return _Reply(404, {"html": "<p>Not found</p>"})
        pi_id = match.group(1)
        if request.method == "POST":
            if self.payment_intents[pi_id]["status"] != "requires_action":
                return _Reply(409, {"html": "<p>This payment is not waiting for you.</p>"})
            self.complete_challenge(pi_id, succeeded=request.params.get("result") != "failed")
            return _Reply(200, {"html": "<p>Done. You may close this window.</p>"})
        return _Reply(
            200,
            {
                "html": f'<form method="post"><p>Authenticate payment {pi_id}</p>'
                '<button name="result" value="succeeded">Complete</button>'
                '<button name="result" value="failed">Fail</button></form>'
            },
        )

    def _payment_method(self, params: dict[str, Any]) -> _Reply:
        """Stripe.js's card tokenization, called from the browser with the publishable key:
        a known test card number becomes Stripe's test PaymentMethod for it (`pm_card_visa`),
        which the PaymentIntents API below takes; any other number is refused as Stripe does."""
        cors = {"Access-Control-Allow-Origin": "*"}
        key = params.get("key")
        if not isinstance(key, str) or not hmac.compare_digest(key, self.publishable_key):
            reply = _error(401, "invalid_request_error", "Invalid API Key provided.")
            return _Reply(reply.status, reply.body, cors)
        card = params.get("card")
        number = card.get("number") if isinstance(card, dict) else None
        name = TEST_CARD_NUMBERS.get(number) if isinstance(number, str) else None
        if name is None:
            reply = _error(
                402, "card_error", "Your card number is incorrect.", code="incorrect_number"
            )
            return _Reply(reply.status, reply.body, cors)
        body = {"id": f"pm_card_{name}", "object": "payment_method", "type": "card"}
        return _Reply(200, body | {"card": {"last4": number[-4:]}}, cors)

    # --- the API -------------------------------------------------------------------------------
    def _route(self, request: Recorded, key: str | None) -> _Reply:
        method, path, params = request.method, request.path, request.params
        if method == "POST" and path == "/v1/payment_intents":
            return self._create(params, key)
        if method == "POST" and path == "/v1/refunds":
            return self._refund(params)
        match = re.fullmatch(r"/v1/payment_intents/([^/]+)(?:/(confirm|capture|cancel))?", path)
        if match is not None:
            pi_id, action = match.groups()
            pi = self.payment_intents.get(pi_id)
            if pi is None:
                return _no_such("payment_intent", pi_id, "intent", status=404)
            if method == "GET" and action is None:
                return _Reply(200, self._render(pi, params))
            if method == "POST" and action == "confirm":
                return self._confirm(pi, params, key)
            if method == "POST" and action == "capture":
                return self._capture(pi, params)
            if method == "POST" and action == "cancel":
                return self._cancel(pi, params)
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _create(self, params: dict[str, Any], key: str | None) -> _Reply:
        unknown = sorted(set(params) - _CREATE_PARAMS)
        if unknown:
            return _error(
                400,
                "invalid_request_error",
                f"Received unknown parameter: {unknown[0]}",
                code="parameter_unknown",
                param=unknown[0],
            )
        amount = _amount(params.get("amount"), "amount")
        if isinstance(amount, _Reply):
            return amount
        confirm = params.get("confirm") == "true"
        if confirm and "payment_method_types" not in params and "return_url" not in params:
            # Stripe's rule: with the Dashboard's payment methods (some redirect), confirming
            # needs a return_url; an integration that sends payment_method_types[]=card does not.
            return _error(
                400,
                "invalid_request_error",
                "This PaymentIntent is configured to accept payment methods enabled in your "
                "Dashboard; you must provide a `return_url` when confirming.",
                code="parameter_missing",
                param="return_url",
            )
        capture_method = params.get("capture_method", "automatic_async")
        pi: dict[str, Any] = {
            "id": new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": str(params.get("currency", "")).lower(),
            "capture_method": capture_method,
            "status": "requires_payment_method",
            "payment_method": None,
            "payment_method_types": params.get("payment_method_types", ["card"]),
            "latest_charge": None,
            "last_payment_error": None,
            "next_action": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "livemode": False,
            "created": int(time.time()),
            "metadata": params.get("metadata", {}),
        }
        pi["client_secret"] = f"{pi['id']}_secret_{new_id('s')[2:]}"
        refused = self._attach(pi, params)
        if refused is not None:
            return refused
        self.payment_intents[pi["id"]] = pi
        self._keys[pi["id"]] = key or ""
        if pi["payment_method"] is not None:
            pi["status"] = "requires_confirmation"
        if confirm:
            return self._attempt(pi, params, key)
        return _Reply(200, self._render(pi, params))

    def _attach(self, pi: dict[str, Any], params: dict[str, Any]) -> _Reply | None:
        """Take the card from `payment_method` (pm_card_*) or `payment_method_data` (a token)."""
        data = params.get("payment_method_data")
        if isinstance(data, dict):
            card = data.get("card")
            token = card.get("token") if isinstance(card, dict) else None
            if data.get("type") != "card" or not isinstance(token, str):
                return _error(
                    400,
                    "invalid_request_error",
                    "payment_method_data[card][token] is required for type card.",
                    code="parameter_missing",
                    param="payment_method_data[card][token]",
                )
            test = TEST_CARDS.get(token.removeprefix("tok_")) if token.startswith("tok_") else None
            if test is None:
                return _no_such("token", token, "payment_method_data[card][token]")
        elif isinstance(params.get("payment_method"), str):
            ref = str(params["payment_method"])
            test = (
                TEST_CARDS.get(ref.removeprefix("pm_card_")) if ref.startswith("pm_card_") else None
            )
            if test is None:
                return _no_such("PaymentMethod", ref, "payment_method")
        else:
            return None
        pi["payment_method"] = new_id("pm")
        self._cards[pi["id"]] = test
        return None

    def _attempt(self, pi: dict[str, Any], params: dict[str, Any], key: str | None) -> _Reply:
        card = self._cards.get(pi["id"])
        if card is None:
            return _error(
                400,
                "invalid_request_error",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
                payment_intent=self._render(pi, {}),
            )
        pi["last_payment_error"] = None
        if card.decline is not None:
            code, decline_code, message = card.decline
            charge = self._new_charge(pi, key, status="failed")
            pi["status"] = "requires_payment_method"
            error = {
                "type": "card_error",
                "code": code,
                "decline_code": decline_code,
                "message": message,
                "charge": charge["id"],
            }
            pi["last_payment_error"] = dict(error)
            return _Reply(402, {"error": {**error, "payment_intent": self._render(pi, {})}})
        if card.three_d_secure:
            pi["status"] = "requires_action"
            page = f"{self.url}/3ds/{pi['id']}"
            return_url = params.get("return_url")
            pi["next_action"] = (
                {
                    "type": "redirect_to_url",
                    "redirect_to_url": {"url": page, "return_url": return_url},
                }
                if return_url
                else {
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": page},
                }
            )
            return _Reply(200, self._render(pi, params))
        self._charge(pi, key)
        return _Reply(200, self._render(pi, params))

    def _new_charge(self, pi: dict[str, Any], key: str | None, *, status: str) -> dict[str, Any]:
        """A charge, counted under the idempotency key of the request that made it."""
        charge = {
            "id": new_id("ch"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "captured": False,
            "refunded": False,
            "currency": pi["currency"],
            "payment_intent": pi["id"],
            "status": status,
        }
        self._charge_objects[charge["id"]] = charge
        pi["latest_charge"] = charge["id"]
        self.charges[key or ""] += 1
        return charge

    def _charge(self, pi: dict[str, Any], key: str | None) -> None:
        charge = self._new_charge(pi, key, status="succeeded")
        if pi["capture_method"] == "manual":
            pi["status"] = "requires_capture"
            pi["amount_capturable"] = pi["amount"]
        else:
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
            charge["captured"] = True
            charge["amount_captured"] = pi["amount"]

    def _confirm(self, pi: dict[str, Any], params: dict[str, Any], key: str | None) -> _Reply:
        if pi["status"] == "requires_action":
            return _Reply(200, self._render(pi, params))  # the challenge is still open
        if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
            return _unexpected_state(self._render(pi, {}), "confirmation")
        refused = self._attach(pi, params)
        if refused is not None:
            return refused
        return self._attempt(pi, params, key)

    def _capture(self, pi: dict[str, Any], params: dict[str, Any]) -> _Reply:
        if pi["status"] != "requires_capture":
            return _unexpected_state(self._render(pi, {}), "capture")
        amount = _amount(params.get("amount_to_capture", str(pi["amount_capturable"])),
                         "amount_to_capture")  # fmt: skip
        if isinstance(amount, _Reply):
            return amount
        if amount > pi["amount_capturable"]:
            return _error(
                400,
                "invalid_request_error",
                "The amount to capture is greater than the amount capturable.",
                code="amount_too_large",
                param="amount_to_capture",
            )
        charge = self._charge_objects[pi["latest_charge"]]
        charge["captured"] = True
        charge["amount_captured"] = amount
        pi["status"] = "succeeded"
        pi["amount_received"] = amount
        pi["amount_capturable"] = 0
        return _Reply(200, self._render(pi, params))

    def _cancel(self, pi: dict[str, Any], params: dict[str, Any]) -> _Reply:
        if pi["status"] not in _CANCELABLE:
            return _unexpected_state(self._render(pi, {}), "cancellation")
        pi["status"] = "canceled"
        pi["amount_capturable"] = 0
        pi["next_action"] = None
        pi["canceled_at"] = int(time.time())
        pi["cancellation_reason"] = params.get("cancellation_reason")
        return _Reply(200, self._render(pi, params))

    def _refund(self, params: dict[str, Any]) -> _Reply:
        pi_id = str(params.get("payment_intent", ""))
        pi = self.payment_intents.get(pi_id)
        if pi is None:
            return _no_such("payment_intent", pi_id, "payment_intent")
        if pi["status"] != "succeeded":
            return _unexpected_state(self._render(pi, {}), "refund")
        charge = self._charge_objects[pi["latest_charge"]]
        remaining = charge["amount_captured"] - charge["amount_refunded"]
        if remaining <= 0:
            return _error(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = _amount(params.get("amount", str(remaining)), "amount")
        if isinstance(amount, _Reply):
            return amount
        if amount > remaining:
            return _error(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                code="amount_too_large",
                param="amount",
            )
        fails = self._cards[pi_id].refund_fails
        if not fails:
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
        refund = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": pi["currency"],
            "charge": charge["id"],
            "payment_intent": pi_id,
            "status": "failed" if fails else "succeeded",
            "failure_reason": "expired_or_canceled_card" if fails else None,
        }
        return _Reply(200, refund)

    def _render(self, pi: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The PaymentIntent as JSON, with `latest_charge` expanded when asked."""
        out = json.loads(json.dumps(pi))
        expand = params.get("expand") or []
        if "latest_charge" in expand and pi["latest_charge"] is not None:
            out["latest_charge"] = dict(self._charge_objects[pi["latest_charge"]])
        return dict(out)
