"""The service as production runs it: gunicorn with gunicorn.conf.py and wsgi.py, on a free 127.0.0.1 port."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from .liveserver import free_port

ROOT = Path(__file__).resolve().parent.parent


class Gunicorn:
    """One gunicorn instance with its own settings (environment); stop() ends it and its workers."""

    def __init__(self, settings: dict, workers: int = 2):
        self.port = free_port()
        self.settings, self.workers = settings, workers
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="authsvc-gunicorn-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        """The instance's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "Gunicorn":
        """Start and wait until /healthz answers; raise with the log's tail if it does not."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "DATABASE_", "GOOGLE_"))}
        env.update({"GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": str(self.workers),
                    "PUBLIC_BASE_URL": self.url, **{k: str(v) for k, v in self.settings.items()}})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        tail = self.tail()
        self.stop()
        raise RuntimeError(f"gunicorn did not start:\n{tail}")

    def tail(self, lines: int = 40) -> str:
        """The end of the instance's log."""
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the master and its workers (idempotent); the log file is removed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
