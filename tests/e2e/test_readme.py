"""On a fresh clone, `make run` then the README's curl walk-through works exactly as written.

The server is started the way `make run` starts it (db upgrade, merchants demo, serve on
127.0.0.1:8000, all on the default ./var/strongroom.db of the working directory), and the
```sh block under "## A first payment" is run with bash as written: the only change is the
secret key on its `export SK=` line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import PortTaken, cli_json, port_free, server_env, serving
from tests.support import service_missing

README = Path(__file__).resolve().parents[2] / "README.md"
README_PORT = 8000
SK_LINE = re.compile(r"^(export SK=)sk_test_\.\.\.(?=\s)", re.MULTILINE)


def walkthrough() -> str:
    """The ```sh block under the '## A first payment' heading, verbatim."""
    text = README.read_text()
    section = text.split("\n## A first payment\n", 1)
    assert len(section) == 2, "README.md has no '## A first payment' section"
    body = section[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", body, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, f"expected one ```sh block under '## A first payment', got {blocks}"
    return str(blocks[0])


def with_key(script: str, secret_key: str) -> str:
    replaced, count = SK_LINE.subn(lambda m: m.group(1) + secret_key, script)
    assert count == 1, "the walk-through should set SK once, as `export SK=sk_test_...`"
    return replaced


def shell_env() -> dict[str, str]:
    """A second terminal: the user's environment, without the virtualenv or Strongroom settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}


def run_block(script: str, cwd: Path) -> list[dict[str, Any]]:
    """Run the block with bash (stopping at the first failing command); the JSON documents it
    printed, in order. curl -s prints bodies without newlines, so they are read one by one."""
    done = subprocess.run(
        ["bash", "-e", "-u", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"bash exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    decoder = json.JSONDecoder()
    documents: list[dict[str, Any]] = []
    output, at = done.stdout, 0
    while True:
        while at < len(output) and output[at].isspace():
            at += 1
        if at == len(output):
            return documents
        document, at = decoder.raw_decode(output, at)
        documents.append(document)


def test_readme_walkthrough_works_as_written(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        service_missing("curl", "the README's walk-through uses curl")
    if not port_free(README_PORT):
        service_missing(f"port {README_PORT}", "something is already listening on 127.0.0.1:8000")
    script = walkthrough()

    # `make run`: db upgrade, merchants demo (it prints the keys), serve on 127.0.0.1:8000.
    env = server_env()
    cli_json("db", "upgrade", env=env, cwd=tmp_path)
    assert (tmp_path / "var" / "strongroom.db").is_file()
    demo = cli_json("merchants", "demo", env=env, cwd=tmp_path)
    assert demo["created"] is True
    secret_key = demo["secret_key"]
    assert secret_key.startswith("sk_test_")

    with contextlib.ExitStack() as stack:
        try:
            base_url = stack.enter_context(
                serving(README_PORT, env=env, cwd=tmp_path, log=tmp_path / "server.log")
            )
        except PortTaken:
            service_missing(f"port {README_PORT}", "another process took 127.0.0.1:8000")
        assert base_url == "http://127.0.0.1:8000"
        first = run_block(with_key(script, secret_key), tmp_path)

        assert len(first) == 4, first
        created, confirmed, captured, refunded = first
        assert created["object"] == "payment_intent"
        assert created["id"].startswith("pi_")
        assert created["amount"] == 2000
        assert created["currency"] == "usd"
        assert created["capture_method"] == "manual"
        assert created["payment_method"] == "tok_visa"
        assert created["status"] == "requires_confirmation"
        pi = created["id"]
        assert json.loads((tmp_path / "pi.json").read_text()) == created

        assert confirmed["id"] == pi
        assert confirmed["status"] == "requires_capture"
        assert confirmed["amount_capturable"] == 2000
        assert confirmed["amount_received"] == 0

        assert captured["id"] == pi
        assert captured["status"] == "succeeded"
        assert captured["amount_received"] == 1500
        assert captured["amount_capturable"] == 0

        assert refunded["object"] == "refund"
        assert refunded["payment_intent"] == pi
        assert refunded["status"] == "succeeded"
        assert refunded["amount"] == 500
        assert refunded["currency"] == "usd"

        # Every request in the block carries an Idempotency-Key: the whole block again gets
        # the first responses back, and nothing is charged twice.
        again = run_block(with_key(script, secret_key), tmp_path)
        assert again == first

        # "... you get the first response back, byte for byte, with Idempotent-Replayed: true"
        with httpx.Client(base_url=base_url, timeout=30.0) as http:
            replay = http.post(
                "/v1/refunds",
                headers={
                    "Authorization": f"Bearer {secret_key}",
                    "Idempotency-Key": "order-1001-refund-1",
                },
                json={"payment_intent": pi, "amount": 500},
            )
        assert replay.status_code == 200
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.json() == refunded

        # "The sandbox's record of what it charged: .venv/bin/strongroom sandbox charges"
        charges = cli_json("sandbox", "charges", env=env, cwd=tmp_path)
    assert len(charges) == 1, charges
    (charge,) = charges
    assert charge["id"] == captured["latest_charge"]
    assert charge["payment_method"] == "tok_visa"
    assert charge["amount"] == 2000
    assert charge["amount_captured"] == 1500
    assert charge["amount_refunded"] == 500
