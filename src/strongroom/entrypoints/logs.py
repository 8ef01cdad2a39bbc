"""structlog set-up shared by every entry point: one JSON object per line on stderr, with card
numbers, secrets and credentials redacted from every record, structlog's and the standard
library's (uvicorn, SQLAlchemy, asyncio) alike."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from strongroom.domain.pan import redact_pans

REDACTED = "[REDACTED]"

# Field names whose values are never logged, compared lower-cased with '-' as '_'.
SENSITIVE_KEYS = frozenset(
    {
        # card data
        "card",
        "card_number",
        "cardnumber",
        "number",
        "pan",
        "cvc",
        "cvv",
        "cvc2",
        "cvv2",
        "cid",
        "security_code",
        "exp",
        "exp_month",
        "exp_year",
        "exp_date",
        "expiry",
        "expiry_date",
        "expiration",
        "expiration_date",
        # credentials
        "password",
        "passphrase",
        "passwd",
        "secret",
        "secret_key",
        "api_key",
        "apikey",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "otp",
        "totp",
        "totp_seed",
        "mfa_code",
    }
)
_SENSITIVE_SUFFIXES = ("_password", "_secret", "_secret_key", "_api_key", "_token", "_cvc", "_cvv")

# Secret and restricted API keys, webhook signing secrets, and bearer credentials.
_SECRET = re.compile(r"\b((?:sk|rk)_(?:test|live)_)[A-Za-z0-9_-]+")
_WEBHOOK_SECRET = re.compile(r"\b(whsec_)[A-Za-z0-9+/=_-]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]+")
# `password=…`, `"cvc": "…"` and the like inside free text (a formatted dict, a query string).
# (Authorization headers are left to the bearer pattern below.)
_IN_TEXT = (
    *("password", "passphrase", "passwd", "secret", "secret_key", "api_key", "token"),
    *("cvc", "cvv", "cvc2", "cvv2", "security_code", "otp", "totp"),
)
_KEY_VALUE = re.compile(
    r"(?i)((?<![A-Za-z0-9])(?:"
    + "|".join(sorted(_IN_TEXT, key=len, reverse=True))
    + r")['\"]?\s*[:=]\s*['\"]?)([^'\"\s,;&)}\]]+)"
)
# Quick pre-check: text with none of these cannot hold a secret the patterns above would find.
_SECRET_HINT = re.compile(r"(?i)k_(?:test|live)_|whsec_|bearer")
_HAS_DIGIT = re.compile(r"[0-9]")
_SHORTEST_PAN = 10**12  # integers below this have fewer than 13 digits


def is_sensitive(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in SENSITIVE_KEYS or name.endswith(_SENSITIVE_SUFFIXES)


def redact_text(text: str) -> str:
    """`text` with card numbers masked (first six, last four) and secrets cut to their kind."""
    if _HAS_DIGIT.search(text):
        text = redact_pans(text)
    if ("=" in text or ":" in text) and _KEY_VALUE.search(text):
        text = _KEY_VALUE.sub(r"\1" + REDACTED, text)
    if _SECRET_HINT.search(text):
        text = _BEARER.sub(r"\1" + REDACTED, text)
        text = _SECRET.sub(r"\1" + REDACTED, text)
        text = _WEBHOOK_SECRET.sub(r"\1" + REDACTED, text)
    return text


def redact_value(value: Any) -> Any:
    """A copy of `value` safe to log: dicts, lists and tuples walked, sensitive keys' values
    replaced, every string redacted. Other objects are logged as their redacted repr (which is
    what the JSON renderer would print for them anyway)."""
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if -_SHORTEST_PAN < value < _SHORTEST_PAN:
            return value
        masked = redact_pans(str(value))
        return value if masked == str(value) else masked
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and is_sensitive(key) else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return redact_text(repr(value))


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """The structlog processor: runs after exceptions are formatted, before rendering."""
    result: EventDict = {}
    for key, value in event_dict.items():
        if key.startswith("_"):  # ProcessorFormatter's bookkeeping (_record, _from_structlog)
            result[key] = value
        elif is_sensitive(key):
            result[key] = REDACTED
        else:
            result[key] = redact_value(value)
    return result


class _Stderr:
    """Whatever sys.stderr is when a line is written: test runners and CLI helpers swap it,
    and a logger holding on to a replaced stream writes into a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so that configuring again replaces it instead of adding a second one."""


def configure(level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finish: list[Processor] = [
        structlog.processors.format_exc_info,
        redact,
        structlog.processors.JSONRenderer(),
    ]

    handler = _Handler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn gives its loggers their own handlers and formats; send them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, *finish],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
