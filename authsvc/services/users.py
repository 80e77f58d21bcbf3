"""Looking up users and roles; shared by every service that needs an account by id or address."""
from __future__ import annotations

import uuid

from flask import current_app
from sqlalchemy import func, select

from ..errors import validation_error
from ..extensions import db
from ..models import Role, User


def find_by_email(email: str) -> User | None:
    """The user with this address, compared case-insensitively."""
    return db.session.scalars(select(User).where(func.lower(User.email) == email.lower())).first()


def get_user(user_id) -> User | None:
    """The user with this id (a UUID or its string), or None."""
    try:
        return db.session.get(User, uuid.UUID(str(user_id)))
    except ValueError:
        return None


def check_tier(tier: str | None, field: str = "tier") -> str:
    """The tier to use: the default (first configured) when None; 422 when it is not a configured tier."""
    tiers = current_app.config["TIERS"]
    if tier is None:
        return tiers[0]
    if tier not in tiers:
        raise validation_error({field: [f"must be one of: {', '.join(tiers)}"]})
    return tier


def role(name: str) -> Role:
    """The role with this name, staged for creation if it does not exist yet."""
    found = db.session.scalars(select(Role).where(Role.name == name)).first()
    if found is None:
        found = Role(name=name)
        db.session.add(found)
    return found
