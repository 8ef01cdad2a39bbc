"""A merchant's webhook receiver for tests: a real HTTP server on 127.0.0.1 (a thread running
http.server) that checks every request with the `standardwebhooks` library, as a merchant would,
and answers what the test scripts.

`standardwebhooks` refuses a message whose timestamp is more than five minutes from *its* now,
read from `datetime.now`. Tests move a FakeClock through days of retries, so the receiver is put
in the same fake time: `in_clock_time` points the library's `datetime` at the test's clock. The
signature check itself is the library's, untouched."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import pytest
import standardwebhooks.webhooks as standardwebhooks_module
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support import FakeClock


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b'{"received":true}'


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    verified_by: frozenset[str]  # names of the secrets whose Webhook.verify accepted it

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


Script = Callable[[Received], Reply]


class _Server(http.server.ThreadingHTTPServer):
    # Two workers send dozens of requests at once; the default listen backlog (5) would refuse
    # some of them, and the test would be measuring the receiver.
    request_queue_size = 256


class Receiver:
    """Records every POST with which of `secrets` (name → whsec_…) verify it, and answers with
    `script(request)` (200 unless told otherwise)."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.received: list[Received] = []
        self.script: Script = lambda _request: Reply()
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Received(self.path, headers, body, receiver._verify(body, headers))
                with receiver._lock:
                    receiver.received.append(request)
                reply = receiver.script(request)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output to what the tests print

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _verify(self, body: bytes, headers: dict[str, str]) -> frozenset[str]:
        accepted = set()
        for name, secret in dict(self.secrets).items():
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            accepted.add(name)
        return frozenset(accepted)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


def in_clock_time(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Make standardwebhooks' timestamp check read the test's clock (see the module doc)."""

    class ClockedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> ClockedDatetime:
            moment = clock.now() if tz is None else clock.now().astimezone(tz)
            return cls.fromtimestamp(moment.timestamp(), moment.tzinfo)

    monkeypatch.setattr(standardwebhooks_module, "datetime", ClockedDatetime)


@contextmanager
def running_receiver(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[Receiver]:
    in_clock_time(monkeypatch, clock)
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
