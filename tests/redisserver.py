"""A throwaway redis-server on 127.0.0.1, without persistence, for the shared rate-limit tests."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

from .liveserver import free_port


class RedisServer:
    """redis-server on a free loopback port; stopped (and its folder removed) by stop()."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="authsvc-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
