"""`authsvc mail worker`: a process of its own that delivers the outbox until SIGTERM (the compose `mail` service)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import TEST_SETTINGS

AUTHSVC = str(Path(sys.executable).parent / "authsvc")


@pytest.mark.settings(MAIL_WORKER=False)  # the app under test queues mail but never sends it itself
def test_worker_delivers_queued_mail_and_stops_on_sigterm(auth, outbox, smtp_server, database_url, tmp_path):
    auth.register("queued@example.com")
    assert outbox.messages == []
    heartbeat = tmp_path / "heartbeat"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "DATABASE_", "MAIL_"))}
    env.update({"AUTHSVC_ENV": "testing", "SECRET_KEY": TEST_SETTINGS["SECRET_KEY"], "DATABASE_URL": database_url,
                "INSTANCE_PATH": str(tmp_path / "worker"), "PUBLIC_BASE_URL": "http://localhost",
                "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp_server.port), "MAIL_POLL_SECONDS": "0.2"})
    worker = subprocess.Popen([AUTHSVC, "mail", "worker", "--heartbeat", str(heartbeat)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        message = outbox.wait_for(lambda m: m["To"] == "queued@example.com", timeout=20)
        assert "verify-email/" in message.get_body(("plain",)).get_content()
        deadline = time.monotonic() + 10
        while not heartbeat.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heartbeat.exists()
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0, output
    assert "mail worker: stopped" in output
    assert len(outbox.messages) == 1  # sent once, not again on later passes
