"""The audit trail: a subscriber to the services' signals that writes one event row per auth event.

Events are written in the transaction of the change they describe, so an event exists exactly when its change
does (a failed login and a refresh reuse commit through `APIError(persist=True)`). Details never hold a
password, token or secret: only names, ids and reasons.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from flask import current_app, g, has_request_context, request
from sqlalchemy import bindparam, func, insert, select

from .. import signals
from ..extensions import db
from ..models import AuditEvent, utcnow
from ..schemas import header_text
from .maintenance import delete_in_batches

SAFE_DETAILS = ("reason", "fields", "by_admin", "actor_id", "roles", "email", "old_email", "client_id", "scopes",
                "blocked_seconds", "all", "count", "provider")
# Session ends that another event already describes are not recorded twice.
SESSION_REASONS = {"logout": "logout", "logout_all": "logout", "session_revoked": "session_revoked",
                   "revoked": "session_revoked"}


# A prebuilt INSERT executed in the caller's transaction rather than an ORM object flushed at commit: every
# sign-in records one, and the unit of work for it cost as much as the rest of the sign-in's writes. The row has no
# foreign key (the trail outlives deleted users), so it cannot depend on the order of the other staged changes.
_INSERT = insert(AuditEvent.__table__).values(
    id=bindparam("id"), event=bindparam("event"), user_id=bindparam("user_id"), ip_address=bindparam("ip"),
    user_agent=bindparam("agent"), request_id=bindparam("request_id"), created_at=bindparam("now"),
    details=bindparam("details", type_=AuditEvent.__table__.c.details.type))


def record(event: str, user_id: uuid.UUID | None = None, **details) -> None:
    """Write an audit event about `user_id` in the current transaction, with the request's address, user agent
    and id (it commits or rolls back with the change it describes)."""
    in_request = has_request_context()
    db.session.execute(_INSERT, {
        "id": uuid.uuid4(), "event": event, "user_id": user_id, "now": utcnow(),
        "ip": header_text(request.remote_addr, 64) if in_request else "",
        "agent": header_text(request.headers.get("User-Agent"), 512) if in_request else "",
        "request_id": g.get("request_id", "") if in_request else "",
        "details": {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in details.items() if k in SAFE_DETAILS},
    })


def _subscriber(event: str):
    def handler(_sender, **kwargs):
        user = kwargs.pop("user", None)
        user_id = user.id if user is not None else kwargs.pop("user_id", None)
        if event == "session_revoked":
            name = SESSION_REASONS.get(kwargs.get("reason"))
            if name is None:
                return
            record(name, user_id, **kwargs)
            return
        if "client" in kwargs:
            kwargs["client_id"] = kwargs.pop("client").client_id
        record(event, user_id, **kwargs)

    return handler


_HANDLERS = {name: _subscriber(name) for name in (
    "user_registered", "login_succeeded", "login_failed", "session_revoked", "refresh_reused", "password_changed",
    "password_reset", "email_verified", "email_changed", "account_blocked", "user_updated", "user_deleted",
    "client_created", "client_deleted", "google_linked", "google_unlinked",
)}
for _name, _handler in _HANDLERS.items():
    getattr(signals, _name).connect(_handler)
signals.user_deactivated.connect(lambda sender, **kw: _HANDLERS["user_updated"](sender, reason="deactivated", **kw),
                                 weak=False)


def events(page: int, per_page: int, user_id: str | None, event: str | None) -> dict:
    """One page of events, newest first."""
    query = select(AuditEvent)
    if user_id:
        try:
            query = query.where(AuditEvent.user_id == uuid.UUID(user_id))
        except ValueError:
            return {"items": [], "page": page, "per_page": per_page, "total": 0}
    if event:
        query = query.where(AuditEvent.event == event)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(AuditEvent.created_at.desc(), AuditEvent.id)
                              .offset((page - 1) * per_page).limit(per_page))
    return {"items": [r.to_dict() for r in rows], "page": page, "per_page": per_page, "total": total}


def purge(older_than_days: int | None = None, batch_size: int = 1000) -> int:
    """Delete events older than the retention (AUDIT_RETENTION_DAYS) in committed batches; return how many.

    The trail grows by a row per sign-in: a first purge, or one after a long pause, may meet millions of rows, and
    one DELETE of them all would be one long transaction (and on SQLite one long write lock) that live requests
    wait behind. Batches of `batch_size` let them interleave, as `authsvc cleanup` does.
    """
    days = current_app.config["AUDIT_RETENTION_DAYS"] if older_than_days is None else older_than_days
    return delete_in_batches(AuditEvent, AuditEvent.created_at < utcnow() - timedelta(days=days), batch_size)
