"""Server processes log JSON lines whose tracebacks carry no local variables (so no request
headers or keys), however uvicorn started them. Run in a fresh process, as uvicorn's workers
are, so nothing configured by the test run itself can help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import structlog
from strongroom.entrypoints.api.app import app_from_environment

app_from_environment()

def handle(authorization):
    raise RuntimeError("boom")

secret = "sk_test_" + "must_never_be_logged"  # built at run time: only locals could show it
try:
    handle(f"Bearer {secret}")
except RuntimeError:
    structlog.get_logger("test").exception("unhandled error")
"""


def test_server_processes_log_tracebacks_without_locals(tmp_path: Path) -> None:
    env = {**os.environ, "STRONGROOM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    record = json.loads(last)
    assert record["event"] == "unhandled error"
    assert "RuntimeError: boom" in record["exception"]
    assert "must_never_be_logged" not in result.stderr + result.stdout
