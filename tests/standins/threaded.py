"""What the HTTP stand-ins share: a real server on 127.0.0.1 (an ephemeral port) run by
http.server in a daemon thread, used as a context manager. `stop` releases any request a test
is holding before it shuts the server down, so teardown never waits on one."""

from __future__ import annotations

import http.server
import threading
from types import TracebackType
from typing import Self

# How often serve_forever looks for `stop` (http.server's default, 0.5 s, is each test's teardown).
POLL_SECONDS = 0.01


class ThreadedStandIn:
    _released: threading.Event  # set on stop: held requests stop waiting

    def _serve(self, server: http.server.ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(POLL_SECONDS,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
