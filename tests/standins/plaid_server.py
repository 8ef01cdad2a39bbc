"""A stand-in for the part of Plaid's API that PlaidProvider uses: a real HTTP server on
127.0.0.1 (http.server in a thread, an ephemeral port) that the official `plaid-python` SDK
reaches over the network, as it would reach sandbox.plaid.com.

It speaks Plaid's JSON bodies and its error body (`error_type`, `error_code`, `error_message`,
`request_id`, …), checks the client id and secret (PLAID-CLIENT-ID / PLAID-SECRET headers, or
`client_id` / `secret` in the body, as Plaid accepts either), and keeps items in memory:

- `public_token(institution=..., accounts=[...])` makes a new item and a public token for it, as
  Link would hand the browser. `instant_checking()`, `pending_automatic()` and
  `no_verified_numbers()` make the three kinds of account the adapter must tell apart; `Account`
  makes any other (any verification_status, with or without Auth numbers).
- /item/public_token/exchange is single use; /item/access_token/invalidate returns a new access
  token and the old one then fails with INVALID_ACCESS_TOKEN, as at Plaid.
- `fail_next` answers the next request with a Plaid error (5xx, 429 RATE_LIMIT_EXCEEDED, …)
  without acting; `hold_next` keeps the next request waiting until `release` (a slow Plaid);
  `echo_tokens_in_errors` puts the offending token into error messages, so a
  test can show the adapter keeps tokens out of its own messages whatever Plaid says.

Webhook signing: `WebhookSigner` holds ES256 key pairs (cryptography) under key ids, serves
their public JWKs (with `created_at` and `expired_at`) at /webhook_verification_key/get, and
`sign` makes a `Plaid-Verification` JWT the way Plaid documents it (header alg ES256, kid, typ
JWT; claims iat and request_body_sha256). It builds the JWS by hand, not with PyJWT, so the
verifier is checked against an independent signer, and so it can also make the bad ones
(alg none, HS256 keyed with the public key PEM, a kid nobody published, an old iat, another
body's hash). The signer works without the server: unit tests use it on its own.

Every API request is recorded (path, headers and JSON body, the secret left out) for
assertions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import secrets
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.standins.threaded import ThreadedStandIn

# How long a held request waits for `release` at most, so a forgotten hold cannot hang a run.
HOLD_LIMIT_SECONDS = 10.0
LINK_TOKEN_LIFETIME = timedelta(hours=4)
DEFAULT_INSTITUTION = "First Platypus Bank"

_ALNUM = string.ascii_letters + string.digits


def _alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(kind: str) -> str:
    """Plaid's token shape: `<kind>-<environment>-<uuid>`."""
    return f"{kind}-sandbox-{uuid.uuid4()}"


# --- accounts ------------------------------------------------------------------------------------


def new_account_id() -> str:
    """Plaid account ids are 37 alphanumerics (no digit run long enough to look like a PAN)."""
    return _alnum(37)


@dataclass(frozen=True)
class Account:
    """An account of an item as Plaid's /auth/get shows it. `numbers` is what Auth has for it
    (account, routing), None where it has none yet; `verification_status` is Plaid's field,
    None where Plaid leaves it out (instant Auth)."""

    name: str
    mask: str
    account_id: str = field(default_factory=new_account_id)
    type: str = "depository"
    subtype: str | None = "checking"
    verification_status: str | None = None
    numbers: tuple[str, str] | None = None


def instant_checking(
    *, name: str = "Plaid Checking", account: str = "1111222233330000", routing: str = "011401533"
) -> Account:
    """Instant Auth: no verification_status, full numbers at once."""
    return Account(name=name, mask=account[-4:], numbers=(account, routing))


def pending_automatic(*, name: str = "Plaid Savings", mask: str = "1111") -> Account:
    """Automated micro-deposits under way: Plaid will verify it itself; no numbers yet."""
    return Account(
        name=name,
        mask=mask,
        subtype="savings",
        verification_status="pending_automatic_verification",
    )


def no_verified_numbers(*, name: str = "Plaid Money Market", mask: str = "2222") -> Account:
    """An account Auth has no numbers for and no verification under way."""
    return Account(name=name, mask=mask, subtype="money market")


# --- webhook signing -----------------------------------------------------------------------------


@dataclass
class _SigningKey:
    private: ec.EllipticCurvePrivateKey
    created_at: int
    expired_at: int | None = None


class WebhookSigner:
    """Plaid's webhook signing keys and its signer. One key exists from the start
    (`current_kid`); `rotate` adds another and expires the old one, as Plaid rotates."""

    def __init__(self) -> None:
        self._keys: dict[str, _SigningKey] = {}
        self._lock = threading.Lock()
        self.current_kid = self.new_key()

    def new_key(self, *, expired_at: int | None = None) -> str:
        """Add a key (it becomes the one `sign` uses by default) and return its kid."""
        kid = str(uuid.uuid4())
        with self._lock:
            self._keys[kid] = _SigningKey(
                ec.generate_private_key(ec.SECP256R1()), int(time.time()), expired_at
            )
            self.current_kid = kid
        return kid

    def rotate(self, *, expire_old_at: int | None = None) -> str:
        """A new current key; the old one gets `expired_at` (default: now)."""
        old = self.current_kid
        kid = self.new_key()
        self.expire(old, at=int(time.time()) if expire_old_at is None else expire_old_at)
        return kid

    def expire(self, kid: str, *, at: int | None) -> None:
        with self._lock:
            self._keys[kid].expired_at = at

    def jwk(self, kid: str) -> dict[str, Any] | None:
        """The public JWK Plaid serves for `kid` (None if there is no such key)."""
        with self._lock:
            key = self._keys.get(kid)
        if key is None:
            return None
        numbers = key.private.public_key().public_numbers()
        return {
            "alg": "ES256",
            "crv": "P-256",
            "kid": kid,
            "kty": "EC",
            "use": "sig",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
            "created_at": key.created_at,
            "expired_at": key.expired_at,
        }

    def public_pem(self, kid: str | None = None) -> bytes:
        with self._lock:
            key = self._keys[kid or self.current_kid]
        return key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self,
        body: bytes,
        *,
        iat: int | None = None,
        alg: str = "ES256",
        kid: str | None = None,
        request_body_sha256: str | None = None,
        omit_claims: Sequence[str] = (),
    ) -> str:
        """A `Plaid-Verification` value for `body`.

        - `iat`: Unix seconds (default: now on the real clock; tests with a FakeClock pass it);
        - `alg`: "ES256" (Plaid's), "none" (no signature) or "HS256" (HMAC keyed with the
          public key's PEM: the algorithm-confusion forgery);
        - `kid`: the header's key id (default: the current key). A kid this signer does not
          hold is put in the header while the current key signs: a key nobody published, or
          (from another signer) a forgery under a genuine kid;
        - `request_body_sha256`: the claim (default: the body's hash);
        - `omit_claims`: claims to leave out (a token Plaid would never send).
        """
        header: dict[str, Any] = {"alg": alg, "kid": kid or self.current_kid, "typ": "JWT"}
        claims = {
            "iat": int(time.time()) if iat is None else iat,
            "request_body_sha256": (
                hashlib.sha256(body).hexdigest()
                if request_body_sha256 is None
                else request_body_sha256
            ),
        }
        for name in omit_claims:
            claims.pop(name, None)
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        ).encode()
        if alg == "none":
            signature = b""
        elif alg == "HS256":
            secret = self.public_pem(header["kid"] if header["kid"] in self._keys else None)
            signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
        elif alg == "ES256":
            with self._lock:
                key = self._keys.get(header["kid"]) or self._keys[self.current_kid]
            der = key.private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            # JWS wants the raw 64-byte r||s, not the DER that cryptography returns.
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            raise ValueError(f"unsupported alg {alg!r}")
        return signing_input.decode() + "." + _b64url(signature)


# --- recorded requests and errors ----------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # lower-cased names; PLAID-SECRET is checked, never kept
    body: dict[str, Any]  # the JSON body, `secret` left out


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class PlaidFault:
    status: int = 500
    error_type: str = "API_ERROR"
    error_code: str = "INTERNAL_SERVER_ERROR"
    error_message: str = "an unexpected error occurred"


def _error(status: int, error_type: str, error_code: str, message: str) -> _Reply:
    return _Reply(
        status,
        {
            "display_message": None,
            "documentation_url": f"https://plaid.com/docs/errors/#{error_code.lower()}",
            "error_code": error_code,
            "error_message": message,
            "error_type": error_type,
            "request_id": _alnum(15),
            "suggested_action": None,
        },
    )


def _missing(fields: list[str]) -> _Reply:
    return _error(
        400,
        "INVALID_REQUEST",
        "MISSING_FIELDS",
        f"the following required fields are missing: {', '.join(fields)}",
    )


@dataclass
class _Item:
    item_id: str
    institution_id: str
    institution: str
    accounts: list[Account]
    webhook: str | None


class PlaidStandIn(ThreadedStandIn):
    """The server. Use as a context manager (or start/stop); `url` is the SDK Configuration's
    `host`."""

    def __init__(self, *, client_id: str, secret: str, echo_tokens_in_errors: bool = False) -> None:
        self.client_id = client_id
        self.secret = secret
        self.echo_tokens_in_errors = echo_tokens_in_errors
        # Leave institution_name out of /auth/get's item (older Plaid answers had only the id).
        self.omit_institution_name = False
        self.signer = WebhookSigner()
        self.requests: list[Recorded] = []
        self.items: dict[str, _Item] = {}
        self.link_tokens: dict[str, dict[str, Any]] = {}  # link token → its request body
        self.institutions: dict[str, str] = {}  # institution id → name
        self._public: dict[str, str] = {}  # public token → item id (removed when exchanged)
        self._access: dict[str, str] = {}  # access token → item id (removed when invalidated)
        self._faults: deque[PlaidFault] = deque()
        self._holds = 0
        self._held = threading.Event()
        self._released = threading.Event()
        self.hold_expired = False  # a held request gave up waiting for `release`
        self._lock = threading.RLock()
        self._serve(self._make_server())

    # --- test controls -------------------------------------------------------------------------
    def public_token(
        self,
        *,
        institution: str = DEFAULT_INSTITUTION,
        institution_id: str | None = None,
        accounts: Sequence[Account] | None = None,
        webhook: str | None = None,
    ) -> str:
        """A new item at `institution` holding `accounts` (default: one instant-Auth
        checking account), and the public token Link would hand the browser for it."""
        item = _Item(
            item_id=_alnum(37),
            institution_id=institution_id or f"ins_{secrets.randbelow(10**6)}",
            institution=institution,
            accounts=list(accounts) if accounts is not None else [instant_checking()],
            webhook=webhook,
        )
        token = _token("public")
        with self._lock:
            self.items[item.item_id] = item
            self.institutions[item.institution_id] = institution
            self._public[token] = item.item_id
        return token

    def sign_webhook(
        self,
        body: bytes,
        *,
        iat: int | None = None,
        alg: str = "ES256",
        kid: str | None = None,
        request_body_sha256: str | None = None,
    ) -> str:
        """The `Plaid-Verification` header for `body` (see WebhookSigner.sign)."""
        return self.signer.sign(
            body, iat=iat, alg=alg, kid=kid, request_body_sha256=request_body_sha256
        )

    def fail_next(self, n: int = 1, fault: PlaidFault | None = None) -> None:
        """The next `n` API requests get `fault` (default: a 500 API_ERROR) and nothing is done."""
        with self._lock:
            self._faults.extend([fault or PlaidFault()] * n)

    def hold_next(self) -> None:
        """The next API request waits, before acting, until `release` (or HOLD_LIMIT_SECONDS,
        which sets `hold_expired`)."""
        with self._lock:
            self._released.clear()
            self._held.clear()
            self._holds += 1

    def wait_held(self, timeout: float = HOLD_LIMIT_SECONDS) -> bool:
        """Block until a request is being held (call it from a thread, not the event loop)."""
        return self._held.wait(timeout)

    def release(self) -> None:
        self._released.set()

    def to(self, path: str) -> list[Recorded]:
        """The recorded requests to this path."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def item_id_for_access_token(self, access_token: str) -> str | None:
        with self._lock:
            return self._access.get(access_token)

    # --- the HTTP side -------------------------------------------------------------------------
    def _make_server(self) -> http.server.ThreadingHTTPServer:
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Plaid's API

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = standin._answer(urlsplit(self.path).path, headers, raw)
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests read `requests`, not stderr

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        with self._lock:
            hold = self._holds > 0
            if hold:
                self._holds -= 1
        if hold:  # waits outside the lock, so other requests still get answers
            self._held.set()
            if not self._released.wait(HOLD_LIMIT_SECONDS):
                self.hold_expired = True
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(
                400, "INVALID_REQUEST", "INVALID_BODY", "body could not be parsed as JSON"
            )
        client_id = headers.get("plaid-client-id") or body.get("client_id")
        secret = headers.get("plaid-secret") or body.get("secret")
        kept = {k: v for k, v in headers.items() if k != "plaid-secret"}
        with self._lock:
            self.requests.append(
                Recorded(path, kept, {k: v for k, v in body.items() if k != "secret"})
            )
            if not client_id or not secret:
                return _missing(
                    [n for n, v in (("client_id", client_id), ("secret", secret)) if not v]
                )
            if not (
                hmac.compare_digest(str(client_id), self.client_id)
                and hmac.compare_digest(str(secret), self.secret)
            ):
                return _error(
                    400, "INVALID_INPUT", "INVALID_API_KEYS",
                    "invalid client_id or secret provided",
                )  # fmt: skip
            if self._faults:
                f = self._faults.popleft()
                return _error(f.status, f.error_type, f.error_code, f.error_message)
            route = _ROUTES.get(path)
            if route is None:
                return _error(404, "INVALID_REQUEST", "NOT_FOUND", "not found")
            return route(self, body)

    # --- endpoints (called with the lock held) -------------------------------------------------
    def _link_token_create(self, body: dict[str, Any]) -> _Reply:
        user = body.get("user")
        missing = [f for f in ("client_name", "language", "country_codes") if not body.get(f)]
        if not isinstance(user, dict) or not user.get("client_user_id"):
            missing.append("user.client_user_id")
        if missing:
            return _missing(missing)
        token = _token("link")
        self.link_tokens[token] = body
        expiration = datetime.now(UTC).replace(microsecond=0) + LINK_TOKEN_LIFETIME
        return _Reply(
            200,
            {
                "link_token": token,
                "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "request_id": _alnum(15),
            },
        )

    def _public_token_exchange(self, body: dict[str, Any]) -> _Reply:
        token = body.get("public_token")
        if not isinstance(token, str) or not token:
            return _missing(["public_token"])
        item_id = self._public.pop(token, None)
        if item_id is None:
            said = f" ({token})" if self.echo_tokens_in_errors else ""
            return _error(
                400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN",
                f"provided public token{said} is expired, already exchanged or invalid",
            )  # fmt: skip
        access = _token("access")
        self._access[access] = item_id
        return _Reply(200, {"access_token": access, "item_id": item_id, "request_id": _alnum(15)})

    def _item_for(self, body: dict[str, Any]) -> _Item | _Reply:
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            return _missing(["access_token"])
        item_id = self._access.get(token)
        if item_id is None:
            said = f" ({token})" if self.echo_tokens_in_errors else ""
            return _error(
                400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN",
                f"provided access token{said} is invalid or has been invalidated",
            )  # fmt: skip
        return self.items[item_id]

    def _auth_get(self, body: dict[str, Any]) -> _Reply:
        item = self._item_for(body)
        if isinstance(item, _Reply):
            return item
        accounts = []
        ach = []
        for a in item.accounts:
            account: dict[str, Any] = {
                "account_id": a.account_id,
                "balances": {
                    "available": 100.0,
                    "current": 110.0,
                    "limit": None,
                    "iso_currency_code": "USD",
                    "unofficial_currency_code": None,
                },
                "mask": a.mask,
                "name": a.name,
                "official_name": None,
                "type": a.type,
                "subtype": a.subtype,
            }
            if a.verification_status is not None:
                account["verification_status"] = a.verification_status
            accounts.append(account)
            if a.numbers is not None:
                number, routing = a.numbers
                ach.append(
                    {
                        "account_id": a.account_id,
                        "account": number,
                        "routing": routing,
                        "wire_routing": None,
                    }
                )
        rendered: dict[str, Any] = {
            "item_id": item.item_id,
            "webhook": item.webhook,
            "error": None,
            "available_products": ["balance"],
            "billed_products": ["auth"],
            "consent_expiration_time": None,
            "update_type": "background",
            "institution_id": item.institution_id,
        }
        if not self.omit_institution_name:
            rendered["institution_name"] = item.institution
        return _Reply(
            200,
            {
                "accounts": accounts,
                "numbers": {"ach": ach, "eft": [], "international": [], "bacs": []},
                "item": rendered,
                "request_id": _alnum(15),
            },
        )

    def _institutions_get_by_id(self, body: dict[str, Any]) -> _Reply:
        institution_id = body.get("institution_id")
        missing = [f for f in ("institution_id", "country_codes") if not body.get(f)]
        if missing:
            return _missing(missing)
        name = self.institutions.get(str(institution_id))
        if name is None:
            return _error(
                400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided"
            )
        return _Reply(
            200,
            {
                "institution": {
                    "institution_id": institution_id,
                    "name": name,
                    "products": ["auth", "balance"],
                    "country_codes": ["US"],
                    "routing_numbers": ["011401533"],
                    "oauth": False,
                    "connection_availability": "SUPPORTED",
                },
                "request_id": _alnum(15),
            },
        )

    def _access_token_invalidate(self, body: dict[str, Any]) -> _Reply:
        item = self._item_for(body)
        if isinstance(item, _Reply):
            return item
        del self._access[body["access_token"]]
        new = _token("access")
        self._access[new] = item.item_id
        return _Reply(200, {"new_access_token": new, "request_id": _alnum(15)})

    def _webhook_verification_key_get(self, body: dict[str, Any]) -> _Reply:
        key_id = body.get("key_id")
        if not isinstance(key_id, str) or not key_id:
            return _missing(["key_id"])
        jwk = self.signer.jwk(key_id)
        if jwk is None:
            return _error(
                400, "INVALID_INPUT", "INVALID_WEBHOOK_VERIFICATION_KEY_ID",
                "invalid key_id provided",
            )  # fmt: skip
        return _Reply(200, {"key": jwk, "request_id": _alnum(15)})


_ROUTES = {
    "/link/token/create": PlaidStandIn._link_token_create,
    "/item/public_token/exchange": PlaidStandIn._public_token_exchange,
    "/auth/get": PlaidStandIn._auth_get,
    "/institutions/get_by_id": PlaidStandIn._institutions_get_by_id,
    "/item/access_token/invalidate": PlaidStandIn._access_token_invalidate,
    "/webhook_verification_key/get": PlaidStandIn._webhook_verification_key_get,
}
