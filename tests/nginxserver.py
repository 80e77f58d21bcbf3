"""A real nginx on 127.0.0.1 running deploy/nginx-auth-request.conf in front of a tiny upstream."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .liveserver import free_port

CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx-auth-request.conf"


class _Echo(BaseHTTPRequestHandler):
    """The protected app: answers with the identity headers nginx passed on."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        """Echo the X-User-* headers as JSON."""
        body = json.dumps({k: v for k, v in self.headers.items() if k.lower().startswith("x-user")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        """Quiet."""


class NginxGateway:
    """nginx + upstream; `url` is the gateway's address."""

    def __init__(self, authsvc_url: str):
        self.authsvc = authsvc_url.replace("http://", "")
        self.dir = Path(tempfile.mkdtemp(prefix="authsvc-nginx-"))
        self.port = free_port()
        self.upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the upstream and nginx, and wait until nginx answers."""
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        server = (CONF.read_text().replace("listen 80;", f"listen 127.0.0.1:{self.port};")
                  .replace("authsvc:8000", self.authsvc)
                  .replace("app:8080", f"127.0.0.1:{self.upstream.server_address[1]}"))
        d = self.dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        (d / "nginx.conf").write_text(
            f"{user}daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n"
            f"access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n"
            f"fastcgi_temp_path {d}/fcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{server}\n}}\n")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen([nginx, "-p", str(d), "-c", str(d / "nginx.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/", timeout=1)
            except urllib.error.HTTPError:
                return  # nginx answers (401 without a token): up
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")
                time.sleep(0.1)
            else:
                return
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        """Stop nginx and the upstream, and remove the folder (idempotent)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.upstream.shutdown()
        self.upstream.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)
