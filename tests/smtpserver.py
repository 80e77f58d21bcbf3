"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, for the mail tests."""
from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
import time
from email.message import EmailMessage

from aiosmtpd.controller import Controller

URL = re.compile(r"https?://[^\s<>\"']+")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Collector:
    """aiosmtpd handler: parse each message and keep it."""

    def __init__(self, server: "SMTPServer"):
        self.server = server

    async def handle_DATA(self, _server, _session, envelope):
        """Accept the message and record it."""
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.server.lock:
            self.server.received.append(message)
        return "250 OK"


class SMTPServer:
    """An SMTP server that can be stopped and restarted on the same port (to show the outbox retries)."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.lock = threading.Lock()
        self.received: list[EmailMessage] = []
        self.controller: Controller | None = None

    def start(self) -> None:
        """Listen on 127.0.0.1:port."""
        self.controller = Controller(_Collector(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        """Stop listening (idempotent); connections are refused until restart()."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def restart(self) -> None:
        """Listen again on the same port."""
        self.stop()
        self.start()

    @property
    def messages(self) -> list[EmailMessage]:
        """What has arrived so far."""
        with self.lock:
            return list(self.received)

    def clear(self) -> None:
        """Forget what has arrived."""
        with self.lock:
            self.received.clear()

    def wait_for(self, predicate=None, timeout: float = 10) -> EmailMessage:
        """The first message matching `predicate` (any message if None), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate is None or predicate(message):
                    return message
            if time.monotonic() > deadline:
                got = [(m["To"], m["Subject"]) for m in self.messages]
                raise AssertionError(f"no matching message within {timeout}s; received {got}")
            time.sleep(0.05)


def links(message: EmailMessage) -> list[str]:
    """The http(s) links in a message's plain-text part (their tokens are noted for the log scan)."""
    from .conftest import remember

    found = URL.findall(message.get_body(("plain",)).get_content())
    remember(*(url.rsplit("/", 1)[1] for url in found if len(url.rsplit("/", 1)[1]) >= 32))  # tokens only
    return found
