"""Every log record, structlog's or the standard library's, leaves with card numbers masked,
secret keys cut and sensitive fields replaced, including inside exception tracebacks."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import structlog

from strongroom.adapters.banks.sandbox import KINDS, ROUTING
from strongroom.domain.pan import find_pans
from strongroom.entrypoints import logs
from tests import leak_scan
from tests.support import pg_available, pg_execute, service_missing, unique_name

VISA = "4242424242424242"
SECRET_KEY = "sk_live_" + "Zx9" * 10
RESTRICTED_KEY = "rk_test_" + "Qa1" * 10

SENSITIVE = [
    "card",
    "card_number",
    "number",
    "pan",
    "cvc",
    "CVV",
    "cvc2",
    "cvv2",
    "cid",
    "security_code",
    "exp",
    "exp_month",
    "exp_year",
    "password",
    "passphrase",
    "secret",
    "secret_key",
    "api_key",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "Authorization",
    "cookie",
    "Set-Cookie",
    "otp",
    "totp",
    "webhook_secret",
    # any name holding a sensitive word, wherever it sits
    "cvc_code",
    "card_cvc",
    "cardCvc",
    "cvvNumber",
    "db_password",
    "dbPassword",
    "x-api-key",
    "stripe_api_key",
    "token_type",
    "session_cookie",
    "pin_code",
    "otp_code",
    "pan_last4",
]


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Any:
    """The production log set-up; calling the yielded function returns the records written
    since the last call, parsed."""
    logs.configure("info")
    capsys.readouterr()

    def read() -> list[dict[str, Any]]:
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.strip()]

    return read


def assert_clean(text: str) -> None:
    assert find_pans(text) == []
    assert VISA not in text
    assert SECRET_KEY not in text
    assert RESTRICTED_KEY not in text
    assert "Zx9Zx9" not in text
    assert "Qa1Qa1" not in text


@pytest.mark.parametrize("field", SENSITIVE)
def test_sensitive_fields_are_replaced(field: str, lines: Any) -> None:
    structlog.get_logger("t").info("event", **{field: "value-1234", "kept": "visible"})
    (record,) = lines()
    assert record[field] == logs.REDACTED
    assert record["kept"] == "visible"


def test_nested_fields_and_free_text_are_redacted(lines: Any) -> None:
    structlog.get_logger("t").warning(
        f"charging {VISA} with {SECRET_KEY}",
        request={
            "headers": {"authorization": f"Bearer {SECRET_KEY}", "x-note": "4242-4242-4242-4242"},
            "body": [{"card": {"number": VISA, "cvc": "123"}}, ("tuple", int(VISA))],
            "params": {"note": f"key {RESTRICTED_KEY}", "order": "ORD-2024-000123"},
        },
        raw=f"Authorization: Bearer {SECRET_KEY}",
    )
    (record,) = lines()
    text = json.dumps(record)
    assert_clean(text)
    assert record["event"] == "charging 424242******4242 with sk_live_[REDACTED]"
    assert record["request"]["headers"]["authorization"] == logs.REDACTED
    assert record["request"]["headers"]["x-note"] == "424242******4242"
    assert record["request"]["body"][0]["card"] == logs.REDACTED
    assert record["request"]["body"][1] == ["tuple", "424242******4242"]
    assert record["request"]["params"] == {
        "note": "key rk_test_[REDACTED]",
        "order": "ORD-2024-000123",
    }
    assert record["raw"] == "Authorization: Bearer [REDACTED]"


def test_structlog_exceptions_are_redacted(lines: Any) -> None:
    try:
        raise ValueError(f"declined card {VISA} for key {SECRET_KEY}")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    (record,) = lines()
    assert "ValueError: declined card 424242******4242" in record["exception"]
    assert_clean(json.dumps(record))


def test_standard_library_records_are_json_and_redacted(lines: Any) -> None:
    logger = logging.getLogger("sqlalchemy.engine.test")
    logger.warning("params %s and %s", VISA, {"password": "hunter2", "key": SECRET_KEY})
    try:
        raise RuntimeError(f"card 5555 5555 5555 4444 refused for {SECRET_KEY}")
    except RuntimeError:
        logger.exception("query failed")
    first, second = lines()
    assert first["level"] == "warning"
    assert first["event"].startswith("params 424242******4242 and ")
    assert "hunter2" not in first["event"]  # only free text: the key's value is not a field
    assert "RuntimeError: card 555555******4444 refused" in second["exception"]
    assert second["event"] == "query failed"
    for record in (first, second):
        assert_clean(json.dumps(record))


def test_uvicorn_loggers_go_through_the_same_handler(lines: Any) -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler())  # as uvicorn's own config would
    logs.configure("info")
    lines()
    uvicorn_error.error("Exception in ASGI application: card %s", VISA)
    (record,) = lines()
    assert record["event"] == "Exception in ASGI application: card 424242******4242"


def test_configuring_twice_keeps_one_handler(lines: Any) -> None:
    logs.configure("info")
    logs.configure("info")
    logging.getLogger("t").warning("once")
    assert [r["event"] for r in lines()] == ["once"]


# The leak scan (tests/leak_scan.py) is the check behind all of the above: shown here to find
# what it looks for, in throwaway stores outside any test's tmp_path (which it scans itself).


def test_the_leak_scan_finds_a_planted_card_number_and_secret_key() -> None:
    planted = f"note {spaced_visa()} and {SECRET_KEY}"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        db = sqlite3.connect(root / "planted.db")
        db.execute("CREATE TABLE t (note TEXT)")
        db.execute("INSERT INTO t VALUES (?)", (planted,))
        db.commit()
        db.close()
        (root / "server.log").write_text(json.dumps({"event": planted}) + "\n")
        (root / "clean.log").write_text('{"event": "card 424242******4242 sk_test_[REDACTED]"}\n')

        found = leak_scan.scan_directory(root, "planted")

    assert sorted((f.where, f.kind) for f in found) == [
        ("planted planted.db (SQLite dump)", "card number"),
        ("planted planted.db (SQLite dump)", "secret key"),
        ("planted server.log", "card number"),
        ("planted server.log", "secret key"),
    ]
    for finding in found:
        assert_clean(str(finding))
    assert "424242******4242" in {f.shown for f in found}
    assert leak_scan.scan_text("order ORD-2024-000123, phone +1 415-555-0132", "x") == []


def test_the_leak_scan_finds_bank_access_tokens_and_account_numbers() -> None:
    """The acceptance check for bank accounts: the scan that runs over every test database
    (SQLite dumps, and every PostgreSQL database before it is dropped) flags an access token
    or a linked account's full numbers, wherever they sit."""
    planted = (
        "access-sandbox-8ab976e6-64bc-4b38-98f7-731e7a349970 "
        "access-sandbox-instant-0f1e2d3c4b5a69788796a5b4c3d2e1f0 "
        f"{KINDS['manual'][0]} {ROUTING} 1111222233330000"
    )
    found = leak_scan.scan_text(planted, "x")
    assert sorted(f.kind for f in found) == [
        "bank access token",
        "bank access token",
        "bank number",
        "bank number",
        "bank number",
    ]
    for finding in found:
        assert "…" in finding.shown
    assert leak_scan.scan_text("last4 6789, ba_x, 2026-11-25 000123", "x") == []


def test_the_leak_scan_reads_every_postgres_table() -> None:
    reason = pg_available()
    if reason is not None:
        service_missing("PostgreSQL at 127.0.0.1:5432", reason)
    name = unique_name("strongroom_leak")
    # Made and dropped by hand, not with pg_database: that would scan (and flag) it on drop.
    pg_execute(f'CREATE DATABASE "{name}"')
    try:
        asyncio.run(_plant(name))
        found = leak_scan.scan_text(leak_scan.dump_postgres(name), name)
    finally:
        pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert sorted(f.kind for f in found) == ["card number", "secret key"]


def test_the_leak_scan_reads_a_pg_dump_row_by_row_and_column_by_column() -> None:
    """A dump's neighbouring rows and columns never join into a number: here an outbox row's
    last column (a timestamp ending .017383+00) and the next row's seq (328) would read as
    3601738300328, a Diners Club number that passes Luhn. A card number in one column still
    counts."""
    dump = (
        "COPY public.outbox (seq, id, published_at) FROM stdin;\n"
        "327\tevt_a\t2026-11-24 15:49:36.017383+00\n"
        "328\tevt_b\t2026-11-24 15:49:36.017383+00\n"
        f"329\tcard {spaced_visa()}\t4\n"
        "\\.\n"
    )
    assert leak_scan.find_card_numbers(dump) != []  # what the detector alone makes of it
    found = leak_scan.scan_text(leak_scan.columns_apart(dump), "dump")
    assert [f.shown for f in found] == ["424242******4242"]


async def _plant(database: str) -> None:
    conn = await asyncpg.connect(leak_scan._pg_dsn(database), timeout=5)
    try:
        await conn.execute("CREATE SCHEMA other")
        await conn.execute("CREATE TABLE public.a (note text)")
        await conn.execute("CREATE TABLE other.b (doc jsonb)")
        await conn.execute("INSERT INTO public.a VALUES ($1)", f"card {spaced_visa()}")
        await conn.execute("INSERT INTO other.b VALUES ($1)", json.dumps({"k": SECRET_KEY}))
    finally:
        await conn.close()


def spaced_visa() -> str:
    return " ".join(VISA[i : i + 4] for i in range(0, 16, 4))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [REDACTED]"),
        ("authorization=Basic dXNlcjpw", "authorization=Basic [REDACTED]"),
        ("{'Authorization': 'Basic dXNlcjpw'}", "{'Authorization': 'Basic [REDACTED]'}"),
        ("proxy-authorization: Basic Zm9vOmJhcg==", "proxy-authorization: Basic [REDACTED]"),
        ("upstream sent basic Zm9vOmJhcg== back", "upstream sent basic [REDACTED] back"),
        ("Authorization: sk_live_abcdefabcdef", "Authorization: [REDACTED]"),
        ("Authorization: Token abc123", "Authorization: Token [REDACTED]"),
        (
            "could not connect to postgresql://strongroom:s3cret@db:5432/strongroom",
            "could not connect to postgresql://strongroom:[REDACTED]@db:5432/strongroom",
        ),
        (
            "url='postgresql+asyncpg://u:p%40ss@db/x'",
            "url='postgresql+asyncpg://u:[REDACTED]@db/x'",
        ),
        ("redis://:hunter2@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        ("https://host:8443/path?q=1", "https://host:8443/path?q=1"),
        ("cvc_code: 123", "cvc_code: [REDACTED]"),
        ("card_cvc=123&amount=2000", "card_cvc=[REDACTED]&amount=2000"),
        ("{'db_password': 'correct horse'}", "{'db_password': '[REDACTED]'}"),
        ('{"api_key": "a \\"quoted\\" key"}', '{"api_key": "[REDACTED]"}'),
        ("using basic auth; shipping: ups", "using basic auth; shipping: ups"),
        # A part-word ("pin" in "spinach") before the real one must not hide it.
        ("spinach_password=hunter2", "spinach_password=[REDACTED]"),
        ("shipping_token=abc", "shipping_token=[REDACTED]"),
        ("pinned_secret: x", "pinned_secret: [REDACTED]"),
        ("spinach=3", "spinach=3"),
    ],
)
def test_credentials_in_free_text_are_redacted(text: str, expected: str, lines: Any) -> None:
    assert logs.redact_text(text) == expected
    logging.getLogger("t").warning("%s", text)
    (record,) = lines()
    assert record["event"] == expected


@pytest.mark.parametrize(
    "note",
    [
        "4242\u00a04242\u00a04242\u00a04242",
        "4242\t4242\t4242\t4242",
        "4242\u20134242\u20134242\u20134242",
    ],
)
def test_card_numbers_inside_formatted_objects_are_masked(note: str, lines: Any) -> None:
    """repr() writes a tab or a no-break space as an escape ('4242\\t4242'): still masked."""
    logging.getLogger("t").warning("params %s", {"note": note})
    structlog.get_logger("t").info("event", note=note, obj=Opaque(note))
    first, second = lines()
    assert "424242" in first["event"]
    assert "4242\\" not in json.dumps(first)
    assert leak_scan.find_card_numbers(json.dumps(first)) == []
    assert second["note"] == "424242******4242"
    assert leak_scan.find_card_numbers(json.dumps(second)) == []


class Opaque:
    def __init__(self, note: str) -> None:
        self.note = note

    def __repr__(self) -> str:
        return f"Opaque(note={self.note!r})"


@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4242 4242",
        "4242\u00a04242\u00a04242\u00a04242",
        "4242\\u00a04242\\u00a04242\\u00a04242",  # as JSON escapes it
        "4242\\xa04242\\xa04242\\xa04242",  # as repr() escapes it
        "4242\\t4242\\t4242\\t4242",
        "\\u0034242424242424242",
        "4242/4242/4242/4242",
        "4242_4242_4242_4242",
        "4242 .4242. 4242 .4242",
        "4242\u200b4242\u200b4242\u200b4242",
        "42424242 42424242",  # groups longer than the product allows
        "pan:4242424242424242",
        "card=4000-0566-5566-5556",
        "5555 5555 5555 4444",
        "3782 822463 10005",
    ],
)
def test_the_leak_scan_finds_card_numbers_in_any_spelling(text: str) -> None:
    assert [f.kind for f in leak_scan.scan_text(f"x {text} y", "t")] == ["card number"]


@pytest.mark.parametrize(
    "text",
    [
        "order ORD-2024-000123, phone +1 415-555-0132",
        "2026-11-24 11:00:22.642778+00",
        "2026-11-24T11:00:22.642778Z",
        "41234567-1234-4123-8123-123456789012",
        "sha256 ab4242424242424242cd",
        "424242******4242",
        "4242 4242 4242 4241",
        "1234567812345670",
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6]",
        "at 12:00:00 4242 4242:4242 4242",
    ],
)
def test_the_leak_scan_passes_near_misses(text: str) -> None:
    assert leak_scan.scan_text(text, "t") == []


def test_the_leak_scan_reads_pg_dump_columns_apart() -> None:
    """Numeric columns side by side in COPY data are not one card number; a card number in
    one column still is."""
    row = "pi_1\t3764\t7012\t3456\t2611\t2026-01-01 12:00:00+00\n"  # amounts, not a card
    assert leak_scan.find_card_numbers(row)  # read naively, the columns run together
    assert not leak_scan.find_card_numbers(leak_scan.columns_apart(row))
    planted = "pi_2\t4242 4242 4242 4242\t2000\n"
    assert leak_scan.find_card_numbers(leak_scan.columns_apart(planted))
