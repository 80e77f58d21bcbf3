"""The audit trail and the failed-login counters behind brute-force protection."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import UTCDateTime, isoformat, new_id, utcnow


class AuditEvent(db.Model):
    """One auth event. `user_id` is kept as a plain value (no foreign key): the trail outlives deleted users."""

    __tablename__ = "audit_events"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    event: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)

    def to_dict(self) -> dict:
        """The contract's audit event object."""
        return {"id": str(self.id), "event": self.event, "user_id": str(self.user_id) if self.user_id else None,
                "ip_address": self.ip_address, "user_agent": self.user_agent, "request_id": self.request_id,
                "created_at": isoformat(self.created_at), "details": self.details}


class LoginFailure(db.Model):
    """Failed sign-ins for one account from one source address (never the account alone: see throttle.py)."""

    __tablename__ = "login_failures"
    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
