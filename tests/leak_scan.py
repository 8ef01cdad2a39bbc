"""pytest plugin: after the whole suite, no card number and no secret key may sit in clear in
any test database or any log line. Registered from tests/conftest.py.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.domain.pan import find_pans
from strongroom.entrypoints import logs

SECRET_KEY = re.compile(r"(?<![A-Za-z0-9])(?:sk|rk)_(?:test|live)_[A-Za-z0-9_-]{16,}")
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
    """Card numbers (Luhn-valid, in a brand's range) and secret keys in clear in `text`."""
    found = [Finding(where, "card number", m.masked) for m in find_pans(text)]
    for key in SECRET_KEY.finditer(text):
        shown = key.group()
        found.append(Finding(where, "secret key", f"{shown[:8]}…{shown[-4:]}"))
    return found


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
        return subprocess.run(
            ["pg_dump", "--no-owner", dsn], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    return asyncio.run(_pg_rows(dsn))


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
