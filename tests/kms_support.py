"""Keyrings for tests: a local one in a temporary directory, and AWS KMS played by moto.

AWS is unreachable from here, so the AWS tests run the official boto3 SDK against moto's KMS
server (`moto.server.ThreadedMotoServer`), started on a free loopback port and spoken to over
real HTTP with fake credentials. Each test uses its own alias name, so tests sharing the server
never see each other's key versions.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from strongroom.adapters.kms.port import Keyring, keyring_from_url

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def moto_kms_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 with fake credentials in the environment; yields its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_CREDENTIALS.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


def aws_kms_url(endpoint: str) -> str:
    return f"aws-kms:///strongroom-test-{uuid.uuid4().hex[:12]}?region={REGION}&endpoint_url={endpoint}"


def local_kms_url(directory: Path) -> str:
    return f"local:///{directory}"  # an absolute path gives local:////…


def make_keyring(provider: str, tmp_path: Path, moto_endpoint: str | None) -> tuple[str, Keyring]:
    """(kms_url, keyring) for `provider` ("local" or "aws-kms")."""
    if provider == "local":
        url = local_kms_url(tmp_path / "keyring")
    else:
        assert moto_endpoint is not None
        url = aws_kms_url(moto_endpoint)
    return url, keyring_from_url(url)
