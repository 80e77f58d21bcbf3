"""Delivering the mail outbox: after each commit that queued mail, and by polling for retries.

Each process runs one sender thread (started on its first request, so after gunicorn forks). A message is
claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several instances never send the same one twice; a
failed send is retried with exponential backoff until the server accepts it. With MAIL_SERVER unset (the
embedded default) the "server" is the log plus an .eml file under instance/outbox/.
"""
from __future__ import annotations

import logging
import os
import smtplib
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from flask import Flask, current_app
from flask_mail import Connection, Message
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session as OrmSession

from ..database import locks_rows
from ..extensions import db
from ..models import OutboxMessage, utcnow
from . import recovery, signup, verification
from .mail import REQUEST_PREFIX

log = logging.getLogger(__name__)

# What a mail request (see mail.request) turns into, decided here, off the request path.
COMPOSERS = {
    recovery.REQUEST_KIND: recovery.compose_reset,
    signup.REQUEST_KIND: signup.compose,
    verification.RESEND_KIND: verification.compose_resend,
}


class _TimedConnection(Connection):
    """Flask-Mail's SMTP connection with a timeout: a stalled server must not hold the sender forever."""

    def configure_host(self):
        """Open the SMTP connection (TLS and login as configured) with MAIL_TIMEOUT."""
        timeout = current_app.config["MAIL_TIMEOUT"]
        cls = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = cls(self.mail.server, self.mail.port, timeout=timeout)
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


def _message(row: OutboxMessage) -> Message:
    return Message(subject=row.subject, recipients=[row.recipient], body=row.text_body, html=row.html_body,
                   sender=current_app.config["MAIL_DEFAULT_SENDER"])


def _deliver(message: Message, eml_name: str) -> None:
    if current_app.config["MAIL_SERVER"]:
        with _TimedConnection(current_app.extensions["mail"]) as connection:
            connection.send(message)
        return
    folder = Path(current_app.config["INSTANCE_PATH"]) / "outbox"
    folder.mkdir(mode=0o700, exist_ok=True)  # the messages hold live links: the service's user only
    # Written aside, then renamed into place: whoever watches the folder never reads half a message.
    partial = folder / f"{eml_name}.part"
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(message.as_bytes())
    partial.replace(folder / eml_name)
    if current_app.config["ENV"] == "production":
        # A production log is read by more people than the mailboxes: a reset link there opens the account.
        log.warning("mail to %s: %s: not delivered (MAIL_SERVER is unset); kept in %s", ", ".join(message.recipients),
                    message.subject, folder)
        return
    # Development only (no MAIL_SERVER): the message, links included, goes to the log so it can be clicked.
    log.info("mail to %s: %s\n%s", ", ".join(message.recipients), message.subject, message.body,
             extra={"authsvc_dev_mail": True})


def _backoff(attempts: int) -> timedelta:
    cfg = current_app.config
    return timedelta(seconds=min(cfg["MAIL_RETRY_BASE_SECONDS"] * 2 ** (attempts - 1), cfg["MAIL_RETRY_MAX_SECONDS"]))


def _lease() -> timedelta:
    # Longer than a send can take (connecting, then sending, each within MAIL_TIMEOUT): a message is taken up
    # again only if its sender died mid-send, which means at most one extra copy, as SMTP delivery always allows.
    return timedelta(seconds=max(60.0, 3 * current_app.config["MAIL_TIMEOUT"]))


def deliver_one() -> bool | None:
    """Claim and send the oldest due message: True sent, False failed, None idle.

    The claim is a short transaction that moves the message's next attempt past a lease, and the send happens
    with no transaction open: on SQLite an open write transaction is the database's one write lock, which every
    sign-in would wait behind while the mail server answers (on PostgreSQL, a row lock and a transaction held as
    long). A sender that dies mid-send leaves the message to be tried again once the lease runs out.
    """
    now = utcnow()
    query = (select(OutboxMessage)
             .where(OutboxMessage.sent_at.is_(None), OutboxMessage.next_attempt_at <= now)
             .order_by(OutboxMessage.next_attempt_at).limit(1))
    if locks_rows():
        query = query.with_for_update(skip_locked=True)
    row = db.session.scalars(query).first()
    if row is None:
        db.session.rollback()
        return None
    row_id, kind, recipient = row.id, row.kind, row.recipient
    try:
        if kind.startswith(REQUEST_PREFIX):
            # Only database work (it stages the real message, if any): done within the claim, as one transaction.
            COMPOSERS[kind.removeprefix(REQUEST_PREFIX)](recipient)
        else:
            # Everything the send needs, read now: after the commit below, touching `row` would reload it, in a
            # transaction that would hold the lock all through the send.
            message = _message(row)
            eml_name = f"{row.created_at:%Y%m%dT%H%M%S}-{row.id}.eml"
            # Conditional on the attempt time just read: of two senders that read the same row, one claims it.
            claimed = db.session.execute(
                update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.sent_at.is_(None),
                                            OutboxMessage.next_attempt_at == row.next_attempt_at)
                .values(next_attempt_at=now + _lease()).execution_options(synchronize_session=False))
            db.session.commit()
            if claimed.rowcount != 1:
                return None  # another sender has it
            _deliver(message, eml_name)
    except Exception as exc:  # noqa: BLE001 - any failure to hand over is retried later
        db.session.rollback()
        failed = db.session.get(OutboxMessage, row_id, with_for_update=locks_rows(),
                                populate_existing=True)
        failed.attempts += 1
        failed.next_attempt_at = utcnow() + _backoff(failed.attempts)
        failed.last_error = f"{exc.__class__.__name__}: {exc}"[:200]
        log.warning("mail %s to %s failed (attempt %d): %s", kind, recipient, failed.attempts,
                    exc.__class__.__name__)
        db.session.commit()
        return False
    done = db.session.get(OutboxMessage, row_id, populate_existing=True)
    done.sent_at = utcnow()
    done.attempts += 1
    # Delivered: the bodies held the link's token in plain text (one_time_tokens keeps only its hash), and a
    # read of the database (a backup, a replica) must not open accounts. The row stays, for metrics and cleanup.
    done.text_body = done.html_body = ""
    db.session.commit()
    return True


def flush(limit: int = 1000) -> tuple[int, int]:
    """Send every due message now; return (sent, failed). Used by the sender and `authsvc mail flush`."""
    sent = failed = 0
    for _ in range(limit):
        outcome = deliver_one()
        if outcome is None:
            break
        sent, failed = sent + bool(outcome), failed + (not outcome)
    return sent, failed


def backlog() -> tuple[int, datetime | None]:
    """How many messages wait to be sent, and when the oldest of them was queued (None when none waits)."""
    waiting, oldest = db.session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.sent_at.is_(None))).one()
    return waiting, oldest


def deliver_until_stopped(app: Flask, stopping: threading.Event, wakeup: threading.Event | None = None,
                          batch: int = 1000, after_pass: Callable[[], object] | None = None) -> None:
    """Deliver in passes of up to `batch` messages until `stopping` is set; after a pass that was not full, wait
    MAIL_POLL_SECONDS or until `wakeup`. A failed pass (database down) is logged and the next one retries."""
    while not stopping.is_set():
        busy = False
        if wakeup is not None:
            wakeup.clear()  # before the pass: a commit that queues mail during it wakes the wait that follows
        try:
            with app.app_context():  # a fresh database session for every pass
                sent, failed = flush(limit=batch)
            busy = sent + failed >= batch
            if after_pass is not None:
                after_pass()
        except Exception:  # noqa: BLE001 - a lost database must not end delivery; the next pass retries
            log.exception("mail outbox delivery failed")
        if not busy:
            (wakeup or stopping).wait(app.config["MAIL_POLL_SECONDS"])


class Sender(threading.Thread):
    """The process's sender: wakes when a commit queued mail, and every MAIL_POLL_SECONDS for retries."""

    def __init__(self, app: Flask):
        super().__init__(name="authsvc-mail", daemon=True)
        self.app, self.wakeup, self.stopping = app, threading.Event(), threading.Event()

    def run(self) -> None:
        """Deliver until stopped; errors (database down) are logged and retried at the next wake-up."""
        deliver_until_stopped(self.app, self.stopping, self.wakeup)


_start_lock = threading.Lock()


def start_sender(app: Flask) -> Sender | None:
    """Start this process's sender for `app` once (no-op when MAIL_WORKER is off)."""
    if not app.config["MAIL_WORKER"]:
        return None
    sender = app.extensions.get("authsvc.sender")
    if sender is None or not sender.is_alive():
        with _start_lock:
            sender = app.extensions.get("authsvc.sender")
            if sender is None or not sender.is_alive():
                sender = app.extensions["authsvc.sender"] = Sender(app)
                sender.start()
    return sender


def stop_sender(app: Flask) -> None:
    """Stop the app's sender and wait for it (tests, shutdown)."""
    sender = app.extensions.pop("authsvc.sender", None)
    if sender is not None:
        sender.stopping.set()
        sender.wakeup.set()
        sender.join(timeout=30)


@event.listens_for(OrmSession, "after_commit")
def _wake_after_commit(session) -> None:
    if session.info.pop("authsvc_mail_queued", False):
        sender = current_app.extensions.get("authsvc.sender")
        if sender is not None:
            sender.wakeup.set()


@event.listens_for(OrmSession, "after_rollback")
def _forget_on_rollback(session) -> None:
    session.info.pop("authsvc_mail_queued", None)
