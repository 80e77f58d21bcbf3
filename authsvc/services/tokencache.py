"""A per-worker memory of access-token checks that a revocation on this host wipes at once.

Every gateway request asks whether its access token still holds: a signature check and a database query
(session not ended, user active, `jti` not revoked). Each worker remembers the answer per token for
TOKEN_CHECK_CACHE_SECONDS (under one second), and the contract's promise still holds:

* **at once on the instance that revoked.** Every commit that ends a session, disables or deletes a user,
  revokes a `jti` or deletes a service client writes a new random value into a tiny shared-memory file that
  every process of the service on this host maps (`Signal`). A worker compares that value with the one it saw
  when it remembered an answer; any change voids every answer it remembered. The value is written after the
  commit and before the response leaves, so the client's next request, on whichever worker, sees it.
* **within one second on every other instance:** their memories simply expire.

A worker reads the signal *before* it asks the database, so a revocation committed while it asks is never
remembered as "live". The commits are noticed by SQLAlchemy session events (`watch`), not by each service
remembering to call something: a new way to revoke cannot forget to signal. Changes made outside the service
(SQL by hand) are seen within TOKEN_CHECK_CACHE_SECONDS.
"""
from __future__ import annotations

import logging
import mmap
import os
import time
from typing import Any, Callable

from flask import Flask, current_app
from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import Session as OrmSession

from ..models import RevokedToken, ServiceClient, Session, User

log = logging.getLogger(__name__)

MAX_ENTRIES = 20_000  # per worker; a full memory is emptied (tokens are ~1 KB of payload each at most)
# Tables whose changes may turn a live token into a dead one (for bulk UPDATE/DELETE statements).
WATCHED_TABLES = frozenset({"sessions", "users", "revoked_tokens", "service_clients"})
REVOKED_TOKENS = "revoked_tokens"  # the one table where an INSERT revokes
_PENDING = "authsvc.tokencache.pending"
# Execution options of a bulk UPDATE on a watched table that cannot revoke anything (a refresh touching its
# session's timestamps): without them, every refresh would wipe every worker's memory.
CANNOT_REVOKE = {"authsvc_cannot_revoke": True}


class Signal:
    """Eight bytes in a shared-memory file: rewritten at random by every revocation on this host."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)  # several processes may do this at once: every one writes the same size
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    def read(self) -> bytes:
        """The current value."""
        return self._map[:8]

    def fire(self) -> None:
        """A new value: every worker on this host forgets what it remembered. Random, not a counter: two
        processes firing at once can never write the value a reader already holds."""
        self._map[:8] = os.urandom(8)


class TokenCache:
    """Answers of token checks, each valid for `ttl` seconds and while the host's signal is unchanged."""

    def __init__(self, ttl: float, signal: Signal | None):
        self.ttl, self.signal = ttl, signal
        self._entries: dict[Any, tuple[float, bytes, Any]] = {}  # key -> (deadline, signal seen, answer)

    def remember(self, key, compute: Callable[[], Any], until: Callable[[Any], float | None],
                 lasting: bool = False) -> Any:
        """The remembered answer for `key`, else `compute()`, kept until `ttl` from now or `until(answer)` (a
        monotonic deadline; None: do not keep), whichever comes first.

        A `lasting` answer is a fact no revocation can change (what a token's bytes verify to): it is kept until
        `until(answer)` alone, and the signal does not void it.
        """
        if self.signal is None:
            return compute()
        # Read before compute(), and stored with the answer: an answer is good only under the signal value it
        # was computed under, so a revocation racing the computation (in any process or thread) voids it.
        seen, now = self.signal.read(), time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now and (entry[1] == seen or entry[1] is None):
            return entry[2]
        value = compute()
        deadline = until(value)
        if deadline is not None and deadline > time.monotonic():  # an answer already stale is not kept
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (deadline, None, value) if lasting else (min(now + self.ttl, deadline), seen, value)
        return value


def init_app(app: Flask) -> None:
    """Give `app` its token-check memory (none when TOKEN_CHECK_CACHE_SECONDS is 0 or the signal file cannot be
    mapped: then every check asks the database)."""
    ttl, signal = app.config["TOKEN_CHECK_CACHE_SECONDS"], None
    if ttl > 0:
        try:
            signal = Signal(app.config["TOKEN_CHECK_SIGNAL_FILE"])
        except OSError as exc:
            log.warning("token checks are not cached: %s: %s", app.config["TOKEN_CHECK_SIGNAL_FILE"], exc.strerror)
    app.extensions["authsvc.tokencache"] = TokenCache(ttl, signal)


def cache() -> TokenCache:
    """The current app's token-check memory."""
    return current_app.extensions["authsvc.tokencache"]


def _changed(obj, attribute: str) -> bool:
    return inspect(obj).attrs[attribute].history.has_changes()


def _revokes(session: OrmSession) -> bool:
    """Whether the flush about to be committed can turn a live token into a dead one."""
    for obj in session.dirty:
        if (isinstance(obj, Session) and _changed(obj, "revoked_at")) or \
                (isinstance(obj, User) and (_changed(obj, "is_active") or _changed(obj, "email"))):
            return True
    if any(isinstance(obj, (Session, User, ServiceClient)) for obj in session.deleted):
        return True
    return any(isinstance(obj, RevokedToken) for obj in session.new)


def _mark(session: OrmSession) -> None:
    signal = cache().signal
    if signal is not None:
        session.info[_PENDING] = signal


def _after_flush(session: OrmSession, _context) -> None:
    if _revokes(session):
        _mark(session)


def _on_execute(state: ORMExecuteState) -> None:
    if state.execution_options.get("authsvc_cannot_revoke"):
        return
    if state.is_update or state.is_delete or state.is_insert:
        name = getattr(getattr(state.statement, "table", None), "name", None)
        if name in WATCHED_TABLES and (not state.is_insert or name == REVOKED_TOKENS):
            _mark(state.session)


def _after_commit(session: OrmSession) -> None:
    signal = session.info.pop(_PENDING, None)
    if signal is not None:
        signal.fire()


def _after_rollback(session: OrmSession) -> None:
    session.info.pop(_PENDING, None)


def watch(session_class: type[OrmSession]) -> None:
    """Fire the signal after every commit of `session_class` that revoked something (once per process)."""
    if event.contains(session_class, "after_commit", _after_commit):
        return
    event.listen(session_class, "after_flush", _after_flush)
    event.listen(session_class, "do_orm_execute", _on_execute)
    event.listen(session_class, "after_commit", _after_commit)
    event.listen(session_class, "after_rollback", _after_rollback)
