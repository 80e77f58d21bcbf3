"""Identities at outside providers (Google) linked to an account, each a way to sign in."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import UTCDateTime, isoformat, new_id, utcnow


class LinkedIdentity(db.Model):
    """One provider account (provider + its stable subject id) linked to one of our users."""

    __tablename__ = "linked_identities"
    # A provider subject signs in to exactly one account; an account links at most one subject per provider.
    __table_args__ = (UniqueConstraint("provider", "subject"), UniqueConstraint("user_id", "provider"))
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(254), default="")  # as the provider gave it at link time
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def to_dict(self) -> dict:
        """The identity as its owner sees it."""
        return {"id": str(self.id), "provider": self.provider, "email": self.email,
                "created_at": isoformat(self.created_at),
                "last_used_at": isoformat(self.last_used_at)}
