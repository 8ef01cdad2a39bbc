"""The exceptions Strongroom raises on purpose; the API maps each to one JSON error shape.

StrongroomError                 type            code (default)
├── InvalidRequest              invalid_request_error   parameter_invalid   (400)
│   └── ResourceMissing         invalid_request_error   resource_missing    (404; 400 as a param)
├── IllegalTransition           invalid_request_error   payment_intent_unexpected_state (409)
├── IdempotencyMismatch         idempotency_error       idempotency_error   (422)
├── IdempotencyKeyInUse         idempotency_error       idempotency_key_in_use (409)
├── CardError                   card_error              card_declined       (402)
├── AuthenticationError         authentication_error    api_key_invalid     (401)
├── PermissionDenied            permission_error        permission_denied   (403)
├── RateLimited                 rate_limit_error        rate_limited        (429)
├── ServiceUnavailable          api_error               service_unavailable (503)
└── GatewayUnavailable          api_error               gateway_unavailable (502)
"""

from __future__ import annotations


class StrongroomError(Exception):
    """Base of every deliberate error; carries what the JSON error body shows."""

    type = "api_error"
    default_code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param


class InvalidRequest(StrongroomError):
    """The request's parameters are wrong; nothing was done."""

    type = "invalid_request_error"
    default_code = "parameter_invalid"


class ResourceMissing(InvalidRequest):
    """A referenced object does not exist for this merchant."""

    default_code = "resource_missing"


class IllegalTransition(StrongroomError):
    """The object's current status does not allow the action; the message names the status."""

    type = "invalid_request_error"
    default_code = "payment_intent_unexpected_state"

    def __init__(self, message: str, *, status: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class IdempotencyMismatch(StrongroomError):
    """An Idempotency-Key was reused with other parameters or on another endpoint."""

    type = "idempotency_error"
    default_code = "idempotency_error"


class IdempotencyKeyInUse(StrongroomError):
    """A request with the same Idempotency-Key is still running."""

    type = "idempotency_error"
    default_code = "idempotency_key_in_use"


class CardError(StrongroomError):
    """The gateway declined the card or the customer failed authentication."""

    type = "card_error"
    default_code = "card_declined"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        payment_intent_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.decline_code = decline_code
        self.payment_intent_id = payment_intent_id


class AuthenticationError(StrongroomError):
    """No API key, or one that is unknown or revoked."""

    type = "authentication_error"
    default_code = "api_key_invalid"


class PermissionDenied(StrongroomError):
    """The key is valid but may not do this (a publishable key on a secret endpoint)."""

    type = "permission_error"
    default_code = "permission_denied"


class RateLimited(StrongroomError):
    """Too many requests from this source; `retry_after` says when to try again (seconds)."""

    type = "rate_limit_error"
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ServiceUnavailable(StrongroomError):
    """Something the request depends on is down (the shared rate limiter, for writes); retry
    after `retry_after` seconds."""

    type = "api_error"
    default_code = "service_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)


class GatewayUnavailable(StrongroomError):
    """The gateway's answer is unknown (timeout or 5xx); retry with the same Idempotency-Key."""

    type = "api_error"
    default_code = "gateway_unavailable"
