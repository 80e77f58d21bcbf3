"""Service clients: backends that get their own tokens through the client_credentials grant."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import UTCDateTime, isoformat, new_id, utcnow


class ServiceClient(db.Model):
    """A service client; its secret is stored only as a SHA-256 (it is random, 256 bits)."""

    __tablename__ = "service_clients"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict:
        """The client as the admin API shows it (never the secret)."""
        return {"id": str(self.id), "client_id": self.client_id, "name": self.name, "scopes": list(self.scopes),
                "created_at": isoformat(self.created_at)}
