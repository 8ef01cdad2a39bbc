"""pytest plugin: after the whole suite, no card number, no secret key, no bank access token and
no full bank account or routing number may sit in clear in any test database or any log line.
Registered from tests/conftest.py.

What is scanned, as the suite runs:
- every PostgreSQL database the tests make, just before it is dropped (tests.support's
  `pg_database` calls back here): every row of every table as text, or `pg_dump`'s output when
  STRONGROOM_LEAK_SCAN_PG_DUMP=1 (truer to "a SQL dump", but ~70 ms a database, not ~10 ms);
- every SQLite database file under a test's tmp_path, after the test's teardown, via
  `iterdump()` (the per-test copies, the e2e servers' databases, the CLI's);
- every `*.log` file under a test's tmp_path after teardown (the e2e servers' output);
- everything a test (and the code and child processes it runs) wrote to stdout and stderr, as
  pytest captured it: in-process log lines go there, set up as a server sets them up.

pytest's own "Captured log" copy is not scanned: its handler sees the records before ours
formats (and redacts) them, so it is pytest's view of the raw record, not a line Strongroom
writes. At the end, every finding is printed (masked) and the session fails."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.adapters.banks import sandbox as sandbox_banks
from strongroom.entrypoints import logs
from tests.standins import plaid_server as plaid_standin

SECRET_KEY = re.compile(r"(?<![A-Za-z0-9])(?:sk|rk)_(?:test|live)_[A-Za-z0-9_-]{16,}")
# Plaid's access tokens (access-<environment>-<uuid>) and the sandbox provider's.
ACCESS_TOKEN = re.compile(r"(?<![A-Za-z0-9])access-(?:sandbox|development|production)-[\w-]{8,}")
# Bank numbers have no shape to find them by, so the scan looks for every one the tests link:
# the sandbox provider's and the Plaid stand-in's.
BANK_NUMBERS = re.compile(
    r"(?<![0-9])(?:"
    + "|".join(
        sorted(
            {number for number, _ in sandbox_banks.KINDS.values()}
            | {sandbox_banks.ROUTING, *(plaid_standin.instant_checking().numbers or ())}
        )
    )
    + r")(?![0-9])"
)
SQLITE_MAGIC = b"SQLite format 3\x00"
LARGEST_FILE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str  # "card number" or "secret key"
    shown: str  # masked: never the secret itself

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} {self.shown}"


def scan_text(text: str, where: str) -> list[Finding]:
    """Card numbers (see find_card_numbers) and secret keys in clear in `text`."""
    found = [Finding(where, "card number", mask(digits)) for digits in find_card_numbers(text)]
    for key in SECRET_KEY.finditer(text):
        shown = key.group()
        found.append(Finding(where, "secret key", f"{shown[:8]}…{shown[-4:]}"))
    for token in ACCESS_TOKEN.finditer(text):
        found.append(Finding(where, "bank access token", f"{token.group()[:15]}…"))
    for number in BANK_NUMBERS.finditer(text):
        found.append(Finding(where, "bank number", "…" + number.group()[-4:]))
    return found


# The scan's own card number detector, deliberately broader than the product's
# (strongroom.domain.pan.find_pans), so that it does not share the product's blind spots:
# - backslash escapes are decoded first (JSON's \u0034, repr's \xa0 and \t);
# - digit groups may be separated by up to three of: any whitespace, any dash (Unicode "Pd"),
#   any invisible formatting character (Unicode "Cf": zero-width spaces, soft hyphens), and
#   '.', '/', '_', '+' and '*' (not ':' or ',': times and number lists would match);
# - groups may be of any length, and every brand may be 13 to 19 digits long;
# - only digits and hex letters next to a number make it part of a longer token.
# A card number still starts and ends on group boundaries, passes Luhn and is in a major
# brand's range (a table of its own, below).
_SCAN_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([tnrfv]))")
_NAMED = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_GROUP = re.compile(r"[0-9]+")
_MAX_GAP = 3
_BRAND_PREFIXES = (
    (4, 4),  # Visa
    (51, 55),  # Mastercard
    (2221, 2720),
    (34, 34),  # American Express
    (37, 37),
    (6011, 6011),  # Discover
    (644, 649),
    (65, 65),
    (3528, 3589),  # JCB
    (300, 305),  # Diners Club
    (3095, 3095),
    (36, 36),
    (38, 39),
    (62, 62),  # UnionPay
    (81, 81),
)


def _separator(ch: str) -> bool:
    return ch.isspace() or ch in "./_+*" or unicodedata.category(ch) in ("Pd", "Cf")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _branded(digits: str) -> bool:
    return any(lo <= int(digits[: len(str(lo))]) <= hi for lo, hi in _BRAND_PREFIXES)


def _glued(text: str, at: int) -> bool:
    return 0 <= at < len(text) and (text[at] in "0123456789abcdefABCDEF")


def _unescape(match: re.Match[str]) -> str:
    if match.group(4) is not None:
        return _NAMED[match.group(4)]
    return chr(int(match.group(1) or match.group(2) or match.group(3), 16))


def find_card_numbers(text: str) -> list[str]:
    """The digits of every card number in `text`, by the scan's own, broader rules above."""
    if "\\" in text:
        text = _SCAN_ESCAPE.sub(_unescape, text)
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(text)]
    found: list[str] = []
    i = 0
    while i < len(groups):
        hit: tuple[int, str] | None = None
        digits = ""
        for j in range(i, len(groups)):
            if j > i:
                gap = text[groups[j - 1][1] : groups[j][0]]
                if len(gap) > _MAX_GAP or not all(map(_separator, gap)):
                    break
            digits += text[groups[j][0] : groups[j][1]]
            if len(digits) > 19:
                break
            if (
                len(digits) >= 13
                and not _glued(text, groups[i][0] - 1)
                and not _glued(text, groups[j][1])
                and _branded(digits)
                and _luhn(digits)
            ):
                hit = (j, digits)
        if hit is None:
            i += 1
        else:
            found.append(hit[1])
            i = hit[0] + 1
    return found


def mask(digits: str) -> str:
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def dump_sqlite(path: Path) -> str:
    """The SQL dump of a SQLite database, as `sqlite3 file .dump` prints it."""
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _pg_dsn(database: str) -> str:
    from tests.support import PG_DSN

    base, _, _ = PG_DSN.rpartition("/")
    return f"{base}/{database}"


async def _pg_rows(dsn: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name "
            "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        if not tables:
            return ""
        query = " UNION ALL ".join(
            # Names come from pg_tables, quoted by quote_ident.
            f"SELECT '{t['name']} ' || r::text FROM {t['name']} r"  # noqa: S608
            for t in tables
        )
        return "\n".join(str(row[0]) for row in await conn.fetch(query))
    finally:
        await conn.close()


def dump_postgres(database: str) -> str:
    """Every row of every table of a PostgreSQL database, as text; or pg_dump's output."""
    dsn = _pg_dsn(database)
    if os.environ.get("STRONGROOM_LEAK_SCAN_PG_DUMP") == "1" and shutil.which("pg_dump"):
        dump = subprocess.run(
            ["pg_dump", "--no-owner", dsn], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        return columns_apart(dump)
    return asyncio.run(_pg_rows(dsn))


def columns_apart(dump: str) -> str:
    """pg_dump's COPY data separates columns with tabs and rows with newlines (a tab or a
    newline inside a value is written as \\t or \\n), and both are separators the detector
    allows inside a card number: neighbouring numeric columns, or one row's last column and the
    next row's first, would read as one (a timestamp's fraction followed by an outbox seq did).
    Columns become " | " and every line ends with " |", which ends a run of digits."""
    return dump.replace("\t", " | ").replace("\n", " |\n")


def _files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= LARGEST_FILE:
            yield path


def scan_directory(root: Path, where: str) -> list[Finding]:
    """SQLite databases (by their header) and *.log files under `root`."""
    found: list[Finding] = []
    for path in _files(root):
        label = f"{where} {path.relative_to(root)}"
        if path.suffix == ".log":
            found += scan_text(path.read_text(errors="replace"), label)
            continue
        with path.open("rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                continue
        try:
            found += scan_text(dump_sqlite(path), label + " (SQLite dump)")
        except sqlite3.Error as exc:
            found.append(Finding(label, "unreadable SQLite database", type(exc).__name__))
    return found


class LeakScan:
    """The plugin object: collects findings as the suite runs, reports them at the end."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.scanned = {"postgres": 0, "directories": 0, "reports": 0}
        self._tmp_paths: dict[str, Path] = {}

    def before_pg_drop(self, database: str) -> None:
        self.scanned["postgres"] += 1
        where = f"PostgreSQL database {database}"
        try:
            text = dump_postgres(database)
        except Exception as exc:  # reported as a finding: the run fails, the drop still runs
            self.findings.append(Finding(where, "could not be scanned", type(exc).__name__))
            return
        self.findings += scan_text(text, where)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        yield
        tmp = getattr(item, "funcargs", {}).get("tmp_path")
        if isinstance(tmp, Path):
            self._tmp_paths[item.nodeid] = tmp

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        yield
        tmp = self._tmp_paths.pop(item.nodeid, None)
        if tmp is not None and tmp.is_dir():
            self.scanned["directories"] += 1
            self.findings += scan_directory(tmp, item.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.scanned["reports"] += 1
        for title, content in report.sections:
            # Each phase's report repeats the earlier phases' sections: scan only its own.
            if title.endswith(report.when or "") and ("stdout" in title or "stderr" in title):
                self.findings += scan_text(content, f"{report.nodeid} {title}")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        counts = ", ".join(f"{n} {what}" for what, n in self.scanned.items())
        if not self.findings:
            terminalreporter.write_line(f"leak scan: clean ({counts})")
            return
        terminalreporter.section("leak scan: card numbers or secret keys in clear", red=True)
        for finding in self.findings:
            terminalreporter.write_line(str(finding))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.findings and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    from tests import support

    # In-process tests log exactly as a server process does (JSON on stderr, redacted), so
    # what pytest captures is what a server would write.
    logs.configure("info")
    scan = LeakScan()
    config.pluginmanager.register(scan, "strongroom-leak-scan")
    support.BEFORE_DROP.append(scan.before_pg_drop)


def pytest_unconfigure(config: pytest.Config) -> None:
    from tests import support

    scan = config.pluginmanager.get_plugin("strongroom-leak-scan")
    if isinstance(scan, LeakScan) and scan.before_pg_drop in support.BEFORE_DROP:
        support.BEFORE_DROP.remove(scan.before_pg_drop)
