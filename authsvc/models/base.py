"""Column types shared by the models: timezone-aware UTC times that behave the same on SQLite and PostgreSQL."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import DateTime, TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_id() -> uuid.UUID:
    """A new random UUID for a primary key."""
    return uuid.uuid4()


class UTCDateTime(TypeDecorator):
    """A timestamp stored as UTC (timestamptz on PostgreSQL, naive UTC on SQLite) and always read back aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        """Convert an aware time to UTC before storing it."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use utcnow()")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        """Read a stored time back as aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a trailing `Z`, as the contract writes times."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
