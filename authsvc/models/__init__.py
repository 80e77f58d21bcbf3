"""The data model; importing this package registers every table on `db.metadata`."""
from .audit import AuditEvent, LoginFailure
from .base import isoformat, utcnow
from .clients import ServiceClient
from .identities import LinkedIdentity
from .mail import OutboxMessage
from .sessions import RefreshToken, RevokedToken, Session
from .tokens import OneTimeToken, SigningKey
from .users import ADMIN_ROLE, PERMISSIONS, Role, User, user_roles

__all__ = [
    "AuditEvent", "LinkedIdentity", "LoginFailure", "ADMIN_ROLE", "OneTimeToken", "OutboxMessage", "PERMISSIONS", "ServiceClient", "RefreshToken", "RevokedToken", "Role", "Session", "SigningKey", "User",
    "isoformat", "user_roles", "utcnow",
]
