"""Running the real `strongroom` command: the CLI, and `strongroom serve` as a process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent
STRONGROOM = str(BIN / "strongroom")
HOST = "127.0.0.1"
READY_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def server_env(**settings: str) -> dict[str, str]:
    """The environment for a strongroom command: ours, minus any STRONGROOM_ setting that
    would leak in from the shell running the tests, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    return env


def cli(*args: str, env: dict[str, str], cwd: Path, stdin: str = "") -> str:
    """Run `strongroom ARGS`; its stdout, or a failure showing both streams."""
    done = subprocess.run(
        [STRONGROOM, *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"strongroom {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done.stdout


def cli_json(*args: str, env: dict[str, str], cwd: Path) -> Any:
    return json.loads(cli(*args, "--json", env=env, cwd=cwd))


class PortTaken(Exception):
    """Another process took the port between our choosing it and the server binding it."""


@contextlib.contextmanager
def serving(port: int, *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[str]:
    """`strongroom serve --port PORT` until the block ends; yields its base URL once /healthz
    answers 200. Stopped with SIGTERM (then SIGKILL if it will not stop)."""
    base_url = f"http://{HOST}:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [STRONGROOM, "serve", "--host", HOST, "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(proc, base_url, log)
        yield base_url
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    last = "no answer yet"
    with httpx.Client(base_url=base_url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if b"address already in use" in log.read_bytes():
                    raise PortTaken(base_url)
                pytest.fail(
                    f"strongroom serve exited {proc.returncode} before it was ready:\n"
                    + log.read_text(errors="replace")
                )
            try:
                response = http.get("/healthz")
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            # Poll for readiness (bounded by the deadline above); not a timing assumption.
            time.sleep(0.05)
    pytest.fail(
        f"strongroom serve not ready within {READY_DEADLINE_SECONDS}s ({last}):\n"
        + log.read_text(errors="replace")
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_DEADLINE_SECONDS)


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    merchant_id: str
    secret_key: str
    publishable_key: str
    database_url: str
    env: dict[str, str]
    workdir: Path
    log: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        """A synchronous client authenticated with the merchant's secret key."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=30.0,
            **kwargs,
        )

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=30.0,
            **kwargs,
        )

    def cli_json(self, *args: str) -> Any:
        """`strongroom ARGS --json` against the server's database."""
        return cli_json(*args, env=self.env, cwd=self.workdir)
