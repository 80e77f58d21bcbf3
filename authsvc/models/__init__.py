"""The data model; importing this package registers every table on `db.metadata`."""
from .base import isoformat, utcnow
from .mail import OutboxMessage
from .sessions import RefreshToken, RevokedToken, Session
from .tokens import OneTimeToken, SigningKey
from .users import ADMIN_ROLE, Role, User, user_roles

__all__ = [
    "ADMIN_ROLE", "OneTimeToken", "OutboxMessage", "RefreshToken", "RevokedToken", "Role", "Session", "SigningKey", "User",
    "isoformat", "user_roles", "utcnow",
]
