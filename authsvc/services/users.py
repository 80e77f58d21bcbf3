"""Looking up users and roles; shared by every service that needs an account by id or address."""
from __future__ import annotations

import uuid

from flask import current_app
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from ..database import locks_rows, row_lock
from ..errors import APIError, validation_error
from ..extensions import db
from ..hotread import HotSelect
from ..readonly import reader
from ..models import ADMIN_ROLE, Role, User, user_roles
from ..models.users import user_object


# One round trip on the tables, no ORM: the profile read that apps call on every page (GET /users/me), and the
# user half of every token renewal.
_users, _roles = User.__table__, Role.__table__


def profile_select(*extra_columns, source=None, on=None):
    """A SELECT of the profile's columns, one row per role (a NULL `name` for none), joined to `source` on `on`
    when given; read the rows with `profile_of`."""
    joined = _users if source is None else source.join(_users, on)
    return (select(*extra_columns, _users.c.id, _users.c.email, _users.c.full_name, _users.c.email_verified,
                   _users.c.is_active, _users.c.tier, _users.c.created_at, _users.c.updated_at, _roles.c.name)
            .select_from(joined.outerjoin(user_roles, user_roles.c.user_id == _users.c.id)
                         .outerjoin(_roles, _roles.c.id == user_roles.c.role_id)))


def profile_of(rows) -> dict | None:
    """The contract's User object from a `profile_select` result's rows; None when there are none."""
    if not rows:
        return None
    return user_object(rows[0], sorted(row.name for row in rows if row.name is not None))


_PROFILE = HotSelect(profile_select().where(_users.c.id == bindparam("user_id")))


def profile(user_id: uuid.UUID) -> dict | None:
    """The contract's User object for `user_id` (as `User.to_dict` gives it), read in one query; None if gone."""
    return profile_of(_PROFILE.all(reader(), {"user_id": user_id}))


def find_by_email(email: str) -> User | None:
    """The user with this address, compared case-insensitively, with its roles (one query, not two)."""
    return db.session.scalars(
        select(User).options(joinedload(User.roles)).where(func.lower(User.email) == email.lower())
    ).unique().first()


def _email_taken() -> APIError:
    return APIError(409, "email_taken", "An account with this email address already exists.")


def check_email_free(email: str, user: User | None = None) -> None:
    """409 `email_taken` if an account (other than `user`) has this address."""
    owner = find_by_email(email)
    if owner is not None and (user is None or owner.id != user.id):
        raise _email_taken()


def email_taken_if_conflict() -> None:
    """Flush what is staged; 409 `email_taken` if the unique address index refuses it (an account that took the
    address between our check and this write)."""
    try:
        db.session.flush()
    except IntegrityError:  # the error handler rolls the failed transaction back
        raise _email_taken() from None


def get_user(user_id) -> User | None:
    """The user with this id (a UUID or its string), or None."""
    try:
        return db.session.get(User, uuid.UUID(str(user_id)))
    except ValueError:
        return None


def lock_account(user_id: uuid.UUID) -> None:
    """Lock the account's row (PostgreSQL) until the transaction ends, as every writer of the account takes it
    first: users row, then the admin role's row, then its links and sessions (database.row_lock)."""
    if locks_rows():
        db.session.execute(select(User.id).where(User.id == user_id).with_for_update(**row_lock()))


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


def _lock_admins() -> None:
    # Two admins demoting each other at once would each still see the other and both succeed, leaving none.
    # Locking the admin role's row serialises every change that can remove an admin (SQLite serialises
    # writers anyway, with BEGIN IMMEDIATE).
    db.session.execute(select(Role.id).where(Role.name == ADMIN_ROLE).with_for_update())


def _other_active_admins(user: User) -> int:
    return db.session.scalar(
        select(func.count()).select_from(User).join(user_roles, user_roles.c.user_id == User.id).join(Role)
        .where(Role.name == ADMIN_ROLE, User.is_active.is_(True), User.id != user.id)
    )


def guard_last_admin(user: User, stays_admin: bool) -> None:
    """409 `conflict` if this change would leave no active admin (the user's own role or account included)."""
    if ADMIN_ROLE in user.role_names and user.is_active and not stays_admin:
        _lock_admins()
        if _other_active_admins(user) == 0:
            raise APIError(409, "conflict", "This is the last admin; make another admin first.")
