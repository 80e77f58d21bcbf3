"""Users and roles."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Boolean, Column, ForeignKey, Index, String, Table, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import UTCDateTime, isoformat, new_id, utcnow

ADMIN_ROLE = "admin"
# What roles can grant. `admin` is built in and holds every permission, present and future.
PERMISSIONS = ("users:read", "users:write", "clients:manage", "audit:read")

user_roles = Table(
    "user_roles",
    db.metadata,
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", Uuid, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)


class Role(db.Model):
    """A named role; `admin` is built in."""

    __tablename__ = "roles"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    permissions: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def grants(self, permission: str) -> bool:
        """Whether this role grants `permission`."""
        return self.name == ADMIN_ROLE or permission in (self.permissions or [])


class User(db.Model):
    """An account. `password_hash` is null for users who only sign in with a linked identity."""

    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(200), default="")
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    tier: Mapped[str] = mapped_column(String(32), default="free")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    roles: Mapped[list[Role]] = relationship(secondary=user_roles, lazy="selectin", order_by=Role.name)

    @property
    def role_names(self) -> list[str]:
        """The names of this user's roles, sorted."""
        return sorted(role.name for role in self.roles)

    def can(self, permission: str) -> bool:
        """Whether one of the user's roles grants `permission`."""
        return any(role.grants(permission) for role in self.roles)

    def to_dict(self) -> dict:
        """The contract's User object; never a hash or a secret."""
        return user_object(self, self.role_names)


def user_object(user, roles: list[str]) -> dict:
    """The contract's User object from anything with the user's columns as attributes (a User, or a row of
    `services.users.profile`) and its sorted role names."""
    return {
        "id": str(user.id),
        "email": user.email,
        "full_name": user.full_name,
        "email_verified": user.email_verified,
        "is_active": user.is_active,
        "roles": roles,
        "tier": user.tier,
        "created_at": isoformat(user.created_at),
        "updated_at": isoformat(user.updated_at),
    }


# Uniqueness is case-insensitive: the index is on lower(email), and lookups compare lower(email).
Index("uq_users_email_lower", func.lower(User.email), unique=True)
