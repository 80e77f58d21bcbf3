"""A misbehaving OpenID provider on 127.0.0.1: each path answers what the test sets (status, body, delay)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeProvider:
    """An HTTP server whose answers the test chooses path by path (404 for any path it did not set)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, str, float]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        """The server's URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, path: str, body, status: int = 200, delay: float = 0.0) -> None:
        """Answer GET and POST on `path` with `body` (text, or anything JSON), `status`, after `delay` seconds."""
        self.routes[path] = (status, body if isinstance(body, str) else json.dumps(body), delay)

    def good_discovery(self, **overrides) -> None:
        """Serve a well-formed discovery document naming this server's /auth, /token and /jwks."""
        b = self.base
        self.set("/.well-known/openid-configuration", {
            "issuer": b, "authorization_endpoint": f"{b}/auth", "token_endpoint": f"{b}/token",
            "jwks_uri": f"{b}/jwks", "id_token_signing_alg_values_supported": ["RS256"], **overrides})

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                path = self.path.split("?")[0]
                status, body, delay = fake.routes.get(path, (404, "{}", 0.0))
                if delay:
                    time.sleep(delay)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def do_GET(self):
                self._answer()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._answer()

            def log_message(self, *args):
                pass

        return Handler

    def stop(self) -> None:
        """Shut the server down and close its socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
