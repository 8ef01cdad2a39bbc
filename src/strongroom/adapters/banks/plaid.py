"""The Plaid bank provider: the BankProvider port over Plaid's API through the official
`plaid-python` SDK.

The SDK is synchronous (urllib3), so each call runs in a worker thread (`asyncio.to_thread`)
and the event loop never waits on Plaid. Its pool is thread-safe; one client serves all calls.

How failures come out: every failure is a BankProviderError.

- Plaid answered with an error: `code` is Plaid's `error_code` (INVALID_PUBLIC_TOKEN,
  INVALID_ACCESS_TOKEN, …); `retryable` is true for 5xx and for rate limits (429,
  RATE_LIMIT_EXCEEDED), where the same call may well succeed later.
- Plaid could not be reached, or the connection broke: code NETWORK_ERROR, retryable. (For a
  public token exchange whose answer was lost, Plaid may have acted: a retry then gets
  INVALID_PUBLIC_TOKEN, and the customer links again.)
- Plaid's answer did not fit the SDK's schema: code UNEXPECTED_RESPONSE, not retryable.

Tokens are secrets: a public token can be exchanged for lasting access to a customer's bank
data and an access token is that access. They never go into a log line or an exception
message: Plaid's own error message is kept (it says what went wrong), but any token we sent,
and anything shaped like a Plaid token, is cut out of it first, and the SDK's exception (whose
text holds the raw response) is not chained onto ours.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import plaid  # type: ignore[import-untyped]
import structlog
import urllib3.exceptions
from plaid.api import plaid_api  # type: ignore[import-untyped]
from plaid.model.auth_get_request import AuthGetRequest  # type: ignore[import-untyped]
from plaid.model.country_code import CountryCode  # type: ignore[import-untyped]
from plaid.model.institutions_get_by_id_request import (  # type: ignore[import-untyped]
    InstitutionsGetByIdRequest,
)
from plaid.model.item_access_token_invalidate_request import (  # type: ignore[import-untyped]
    ItemAccessTokenInvalidateRequest,
)
from plaid.model.item_public_token_exchange_request import (  # type: ignore[import-untyped]
    ItemPublicTokenExchangeRequest,
)
from plaid.model.link_token_create_request import (  # type: ignore[import-untyped]
    LinkTokenCreateRequest,
)
from plaid.model.link_token_create_request_user import (  # type: ignore[import-untyped]
    LinkTokenCreateRequestUser,
)
from plaid.model.products import Products  # type: ignore[import-untyped]
from plaid.model.webhook_verification_key_get_request import (  # type: ignore[import-untyped]
    WebhookVerificationKeyGetRequest,
)

from strongroom.adapters.banks.port import (
    AccountNumbers,
    BankProviderError,
    Item,
    ItemAccounts,
    LinkToken,
    ProviderAccount,
)
from strongroom.domain.bank_accounts import VerificationStatus

__all__ = ["PlaidProvider"]

log = structlog.get_logger(__name__)

# The SDK logs every response body (access tokens included) at DEBUG on "plaid.rest"; only
# its warnings may reach Strongroom's logs.
logging.getLogger("plaid").setLevel(logging.WARNING)

# Plaid's token shapes (`access-sandbox-<uuid>`, `public-production-…`, `link-…`), cut out of
# any text that leaves this module even when it is not a token we sent.
_TOKEN_SHAPE = re.compile(
    r"\b(?:access|public|link)-(?:sandbox|development|production)-[0-9A-Za-z-]{8,}"
)
_REDACTED = "[redacted]"

# Plaid's verification_status values that say where an account's verification stands, in the
# domain's terms. Others (`unsent`, `database_matched`, `database_insights_*`) are not a
# verification of ownership, so they map to None: not verified.
_VERIFICATION: Final = {status.value: status for status in VerificationStatus}

_KEY_NOT_FOUND = "INVALID_WEBHOOK_VERIFICATION_KEY_ID"
_RATE_LIMIT = "RATE_LIMIT_EXCEEDED"


class PlaidProvider:
    """BankProvider over Plaid. `host` is the SDK Configuration's host:
    `plaid.Environment.Sandbox`, `plaid.Environment.Production`, or a stand-in's URL.
    `timeout` bounds each call (connect and read), in seconds."""

    name = "plaid"

    def __init__(
        self,
        client_id: str,
        secret: str,
        host: str,
        *,
        client_name: str = "Strongroom",
        country_codes: Sequence[str] = ("US",),
        products: Sequence[str] = ("auth",),
        language: str = "en",
        timeout: float = 30.0,
    ) -> None:
        configuration = plaid.Configuration(
            host=host, api_key={"clientId": client_id, "secret": secret}
        )
        self._api = plaid_api.PlaidApi(plaid.ApiClient(configuration))
        self._client_name = client_name
        self._language = language
        self._timeout = timeout
        # Checked here so that a country or product Plaid does not know fails at start-up,
        # not at a customer's first link: the SDK's own enum check is a no-op.
        self._country_codes = [CountryCode(c) for c in _known(CountryCode, country_codes)]
        self._products = [Products(p) for p in _known(Products, products)]

    def __repr__(self) -> str:
        return f"PlaidProvider(host={self._api.api_client.configuration.host!r})"

    async def create_link_token(self, *, client_user_id: str, webhook_url: str) -> LinkToken:
        request = LinkTokenCreateRequest(
            client_name=self._client_name,
            language=self._language,
            country_codes=self._country_codes,
            products=self._products,
            user=LinkTokenCreateRequestUser(client_user_id=client_user_id),
            webhook=webhook_url,
        )
        answer = await self._call("/link/token/create", self._api.link_token_create, request)
        expiration: datetime = answer["expiration"]
        if expiration.tzinfo is None:  # Plaid sends UTC with a Z; be sure of it either way
            expiration = expiration.replace(tzinfo=UTC)
        return LinkToken(
            link_token=str(answer["link_token"]), expiration=expiration.astimezone(UTC)
        )

    async def exchange_public_token(self, public_token: str) -> Item:
        request = ItemPublicTokenExchangeRequest(public_token=public_token)
        answer = await self._call(
            "/item/public_token/exchange",
            self._api.item_public_token_exchange,
            request,
            secrets=(public_token,),
        )
        return Item(item_id=str(answer["item_id"]), access_token=str(answer["access_token"]))

    async def item_accounts(self, access_token: str) -> ItemAccounts:
        """/auth/get, which returns the accounts, their Auth numbers and the item in one call.
        The institution's name comes from the item's `institution_name`; only where Plaid
        leaves that out is it asked for by id (/institutions/get_by_id), and a failure of
        that second call leaves the name None rather than failing the link over a label."""
        answer = await self._call(
            "/auth/get",
            self._api.auth_get,
            AuthGetRequest(access_token=access_token),
            secrets=(access_token,),
        )
        numbers = {
            str(ach["account_id"]): AccountNumbers(
                account_id=str(ach["account_id"]),
                account=str(ach["account"]),
                routing=str(ach["routing"]),
            )
            for ach in answer["numbers"]["ach"]
        }
        accounts = [
            _account(raw, has_numbers=str(raw["account_id"]) in numbers)
            for raw in answer["accounts"]
        ]
        known = {a.account_id for a in accounts}
        item = answer["item"]
        institution = item.get("institution_name")
        if institution is None and item.get("institution_id") is not None:
            institution = await self._institution_name(str(item["institution_id"]))
        return ItemAccounts(
            institution=None if institution is None else str(institution),
            accounts=accounts,
            numbers={k: v for k, v in numbers.items() if k in known},
        )

    async def rotate_access_token(self, access_token: str) -> str:
        answer = await self._call(
            "/item/access_token/invalidate",
            self._api.item_access_token_invalidate,
            ItemAccessTokenInvalidateRequest(access_token=access_token),
            secrets=(access_token,),
        )
        return str(answer["new_access_token"])

    async def webhook_verification_key(self, key_id: str) -> dict[str, object] | None:
        """The JWK as Plaid sends it (alg, crv, kid, kty, use, x, y, created_at, expired_at),
        or None when Plaid has no key by that id (INVALID_WEBHOOK_VERIFICATION_KEY_ID). Other
        errors, a wrong secret among them, raise: they are not an answer about the key."""
        try:
            answer = await self._call(
                "/webhook_verification_key/get",
                self._api.webhook_verification_key_get,
                WebhookVerificationKeyGetRequest(key_id=key_id),
            )
        except BankProviderError as error:
            if error.code == _KEY_NOT_FOUND:
                return None
            raise
        return dict(answer["key"])

    # --- internals -----------------------------------------------------------------------------
    async def _institution_name(self, institution_id: str) -> str | None:
        try:
            answer = await self._call(
                "/institutions/get_by_id",
                self._api.institutions_get_by_id,
                InstitutionsGetByIdRequest(
                    institution_id=institution_id, country_codes=self._country_codes
                ),
            )
        except BankProviderError as error:
            log.warning(
                "plaid institution name unavailable",
                institution_id=institution_id,
                code=error.code,
            )
            return None
        return str(answer["institution"]["name"])

    async def _call(
        self,
        operation: str,
        method: Callable[..., Any],
        request: Any,
        *,
        secrets: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run one SDK call in a worker thread; its answer as plain dicts and lists."""
        return await asyncio.to_thread(self._call_sync, operation, method, request, secrets)

    def _call_sync(
        self,
        operation: str,
        method: Callable[..., Any],
        request: Any,
        secrets: Sequence[str],
    ) -> dict[str, Any]:
        try:
            response = method(request, _request_timeout=self._timeout)
            answer = response.to_dict()
        except plaid.ApiException as error:
            raise _api_error(operation, error, secrets) from None
        except urllib3.exceptions.HTTPError:
            raise BankProviderError(
                f"Plaid {operation}: no answer (connection failed or timed out)",
                code="NETWORK_ERROR",
                retryable=True,
            ) from None
        except plaid.OpenApiException:
            raise BankProviderError(
                f"Plaid {operation}: the answer did not match Plaid's schema",
                code="UNEXPECTED_RESPONSE",
            ) from None
        if not isinstance(answer, dict):
            raise BankProviderError(
                f"Plaid {operation}: the answer was not an object", code="UNEXPECTED_RESPONSE"
            )
        return answer


def _known(enum: Any, values: Sequence[str]) -> Sequence[str]:
    """`values`, if every one is in the SDK's list for `enum`; else ValueError naming it."""
    allowed = set(enum.allowed_values[("value",)].values())
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"Plaid does not know {enum.__name__} {', '.join(unknown)}")
    return values


def _account(raw: dict[str, Any], *, has_numbers: bool) -> ProviderAccount:
    """Plaid leaves verification_status out for instant Auth: an account with Auth numbers and
    no status was verified at once, by logging in to the bank."""
    status_value = raw.get("verification_status")
    if status_value is None:
        status = VerificationStatus.AUTOMATICALLY_VERIFIED if has_numbers else None
    else:
        status = _VERIFICATION.get(str(status_value))
    subtype = raw.get("subtype")
    return ProviderAccount(
        account_id=str(raw["account_id"]),
        name=str(raw.get("name") or ""),
        mask=str(raw.get("mask") or ""),
        type=str(raw["type"]),
        subtype=None if subtype is None else str(subtype),
        verification_status=status,
    )


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return _TOKEN_SHAPE.sub(_REDACTED, text)


def _api_error(operation: str, error: Any, secrets: Sequence[str]) -> BankProviderError:
    """BankProviderError from the SDK's ApiException: Plaid's error body read for its code."""
    status = int(error.status or 0)
    try:
        body = json.loads(error.body) if error.body else {}
    except (TypeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    error_type = str(body.get("error_type") or "")
    code = str(body.get("error_code") or (f"HTTP_{status}" if status else "NETWORK_ERROR"))
    message = str(body.get("error_message") or error.reason or "no message")
    request_id = body.get("request_id")
    retryable = status == 0 or status >= 500 or status == 429 or error_type == _RATE_LIMIT
    text = f"Plaid {operation}: HTTP {status} {error_type} {code}: {message}"
    if request_id:
        text += f" (request {request_id})"
    return BankProviderError(_redact(text, secrets), code=code, retryable=retryable)
