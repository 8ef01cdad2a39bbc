"""Server processes log JSON lines whose tracebacks carry no local variables (so no request
headers or keys), however uvicorn started them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from strongroom.entrypoints.api.app import app_from_environment


def test_server_processes_log_tracebacks_without_locals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STRONGROOM_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    structlog.reset_defaults()  # as in a fresh uvicorn worker process
    app_from_environment()

    def handle(authorization: str) -> None:
        raise RuntimeError("boom")

    secret = "sk_test_" + "must_never_be_logged"  # built at run time: only locals could show it
    try:
        handle(f"Bearer {secret}")
    except RuntimeError:
        structlog.get_logger("test").exception("unhandled error")

    err = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(err)
    assert record["event"] == "unhandled error"
    assert "RuntimeError: boom" in record["exception"]
    assert "sk_test_must_never_be_logged" not in err
