"""structlog set-up shared by every entry point: one JSON object per line on stderr, with card
numbers, secrets and credentials redacted from every record, structlog's and the standard
library's (uvicorn, SQLAlchemy, asyncio) alike."""

from __future__ import annotations

import functools
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
# Words that make any field name holding them sensitive, wherever they sit in it ("cvc_code",
# "card_cvc", "dbPassword", "x_api_key", "token_type": when in doubt, redacted).
_SENSITIVE_WORDS = re.compile(
    r"passw|passphrase|secret|token|cvc|cvv|api_?key|authoriz|cookie|credential|private_?key"
    r"|security_?code|card_?num"
)
# …and whole words that do, as a part of a name split on '_' ("pan_last", "otp_code").
_SENSITIVE_PARTS = frozenset({"pan", "csc", "cid", "otp", "totp", "pin", "pwd"})

# Secret and restricted API keys, webhook signing secrets, and bearer credentials.
_SECRET = re.compile(r"\b((?:sk|rk)_(?:test|live)_)[A-Za-z0-9_-]+")
_WEBHOOK_SECRET = re.compile(r"\b(whsec_)[A-Za-z0-9+/=_-]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]+")
# `Authorization: Basic dXNlcjpwYXNz` (any scheme, or none) in free text; the scheme is kept.
_AUTHORIZATION = re.compile(
    r"(?i)((?<![A-Za-z0-9])(?:proxy[_-])?authorization['\"]?\s*[:=]\s*['\"]?"
    r"(?:(?:basic|bearer|digest|token|negotiate|ntlm|apikey|[A-Za-z][A-Za-z0-9_-]*(?=\s))\s+)?)"
    r"(?!\[REDACTED\])[^'\"\s,;}\]]+"
)
# `Basic <base64>` anywhere: anything but a plain word after "basic" ("basic auth") is taken
# for a credential.
_BASIC = re.compile(
    r"(?i)\b(basic\s+)(?!\[REDACTED\])(?![A-Za-z][a-z]*(?![A-Za-z0-9+/=]))[A-Za-z0-9+/]{4,}={0,2}"
)
# The password in a URL's user information: `postgresql://user:secret@host/db`.
_URL_PASSWORD = re.compile(
    r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)(?!\[REDACTED\]@)[^\s'\"]*(?=@)"
)
# `password=…`, `"cvc": "…"`, `db_password: '…'` and the like inside free text (a formatted
# dict, a query string): a key holding one of these words, then its value (to its closing
# quote when quoted). Authorization headers are left to the patterns above, which keep the
# scheme.
_KEY_WORDS = re.compile(
    r"(?i)passw|passphrase|secret|token|api_?key|cvc|cvv|security_?code|otp|pin|pwd|csc"
)
_KEY_PARTS = frozenset({"otp", "totp", "pin", "pwd", "csc"})
_KEY_VALUE = re.compile(
    r"(?<![A-Za-z0-9_-])([A-Za-z0-9_-]+['\"]?\s*[:=]\s*)(?!['\"]?\[REDACTED\])"
    r"('[^']*'|\"(?:[^\"\\]|\\.)*\"|[^'\"\s,;&)}\]]+)"
)


def _key_value(match: re.Match[str]) -> str:
    key = match.group(1).rstrip("'\": \t\n=").lower().replace("-", "_")
    # Every word, not just the first: "spinach_password" holds "pin" (not a whole word there)
    # before "passw".
    words = {w.group() for w in _KEY_WORDS.finditer(key)}
    if not words or (words <= _KEY_PARTS and _KEY_PARTS.isdisjoint(key.split("_"))):
        return match.group()
    value = match.group(2)
    quote = value[0] if value[0] in "'\"" else ""
    return match.group(1) + quote + REDACTED + quote


# Quick pre-check: text with none of these cannot hold a secret the patterns above would find.
_SECRET_HINT = re.compile(r"(?i)k_(?:test|live)_|whsec_|bearer|basic|authoriz|://")
# A backslash escape, as repr() and JSON write a tab, a no-break space or a digit: a card
# number logged inside a formatted dict shows as '4242\xa04242\xa04242\xa04242'.
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([tnrfv]))")
_NAMED_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_HAS_DIGIT = re.compile(r"[0-9]")
_SHORTEST_PAN = 10**12  # integers below this have fewer than 13 digits


@functools.lru_cache(maxsize=1024)
def is_sensitive(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return (
        name in SENSITIVE_KEYS
        or _SENSITIVE_WORDS.search(name) is not None
        or not _SENSITIVE_PARTS.isdisjoint(name.split("_"))
    )


def redact_text(text: str) -> str:
    """`text` with card numbers masked (first six, last four) and secrets cut to their kind."""
    if _HAS_DIGIT.search(text):
        text = _redact_pans_escaped(text) if "\\" in text else redact_pans(text)
    if ("=" in text or ":" in text) and _KEY_WORDS.search(text):
        text = _KEY_VALUE.sub(_key_value, text)
    if _SECRET_HINT.search(text):
        text = _AUTHORIZATION.sub(r"\1" + REDACTED, text)
        text = _BASIC.sub(r"\1" + REDACTED, text)
        text = _BEARER.sub(r"\1" + REDACTED, text)
        text = _URL_PASSWORD.sub(r"\1" + REDACTED, text)
        text = _SECRET.sub(r"\1" + REDACTED, text)
        text = _WEBHOOK_SECRET.sub(r"\1" + REDACTED, text)
    return text


def _redact_pans_escaped(text: str) -> str:
    """redact_pans, also finding card numbers written with backslash escapes (repr's '\xa0',
    '\t', JSON's '\u0034'): when the unescaped text holds one, the unescaped text is logged,
    masked."""
    text = redact_pans(text)
    unescaped = _ESCAPE.sub(_unescape, text)
    if unescaped == text:
        return text
    masked = redact_pans(unescaped)
    return masked if masked != unescaped else text


def _unescape(match: re.Match[str]) -> str:
    named = match.group(4)
    if named is not None:
        return _NAMED_ESCAPES[named]
    return chr(int(match.group(1) or match.group(2) or match.group(3), 16))


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
