"""Serve an app on 127.0.0.1 from a thread, for tests that need a real HTTP server (the browser)."""
from __future__ import annotations

import socket
import threading

from werkzeug.serving import make_server


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the app must know its URL before the server exists)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A threaded werkzeug server for `app` on 127.0.0.1:`port`."""

    def __init__(self, app, port: int, https: bool = False):
        self.app, self.port, self.https = app, port, https
        self.server = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving in a daemon thread (over TLS with a throwaway self-signed certificate if `https`)."""
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True,
                                  ssl_context="adhoc" if self.https else None)
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=10)
            self.server = None
