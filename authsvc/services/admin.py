"""Administering users: listing and searching, creating, changing, deleting, with the last admin protected."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import func, or_, select

from .. import signals
from ..database import lock_row
from ..errors import APIError
from ..extensions import db
from ..models import ADMIN_ROLE, Role, User, user_roles, utcnow
from . import accounts, onetime, verification
from .sessions import revoke_user_sessions
from .users import check_email_free, check_tier, email_taken_if_conflict, guard_last_admin, role


def list_users(page: int, per_page: int, q: str | None, is_active: bool | None, role_name: str | None) -> dict:
    """One page of users, newest first, with the total count."""
    query = select(User)
    if q:
        # `%` and `_` are searched for as themselves (escaped), not as wildcards.
        term = q.lower()
        query = query.where(or_(func.lower(User.email).contains(term, autoescape=True),
                                func.lower(User.full_name).contains(term, autoescape=True)))
    if is_active is not None:
        query = query.where(User.is_active.is_(is_active))
    if role_name:
        query = query.join(user_roles, user_roles.c.user_id == User.id).join(Role).where(Role.name == role_name)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    items = db.session.scalars(
        query.order_by(User.created_at.desc(), User.id).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return {"items": [u.to_dict() for u in items], "page": page, "per_page": per_page, "total": total}


def _powers(roles) -> set[str]:
    """What holding `roles` allows: each role itself (gateways authorise by role name, `/auth/verify?role=`) and
    its permissions."""
    powers: set[str] = set()
    for held in roles:
        powers |= {held.name, *(held.permissions or [])}
    return powers


def _check_may_manage(actor: User, roles, what: str) -> None:
    """403 `forbidden` unless `actor` is an admin or holds every power of `roles`: each role and its permissions.

    `users:write` lets a role manage accounts, but never beyond its own powers: otherwise a support role could
    grant itself `admin`, or change an admin's email address and then reset that admin's password. Role names
    count as powers because gateways trust them: a role without permissions (`editor`) is still a key to whatever
    the gateway guards with it. An admin holds every permission, present and future, and every role.
    """
    if ADMIN_ROLE in actor.role_names:
        return
    missing = _powers(roles) - _powers(actor.roles)
    if missing:
        raise APIError(403, "forbidden", f"Only someone holding {', '.join(sorted(missing))} may {what}.")


def _check_not_self(actor: User, user: User, what: str) -> None:
    """403 `forbidden` when someone other than an admin would `what` their own account through the admin API:
    their own account goes through /users/me, with its checks (a confirmed change of address, no tier)."""
    if actor.id == user.id and ADMIN_ROLE not in actor.role_names:
        raise APIError(403, "forbidden", f"Only an admin may {what} their own account here; use /users/me.")


def create_user(actor: User, email: str, password: str | None, full_name: str, roles: list[str],
                tier: str | None, email_verified: bool) -> User:
    """Stage a user created by `actor`; without a password they set one through the reset flow."""
    _check_may_manage(actor, [role(name) for name in set(roles or [])], "grant these roles")
    user = accounts.create_user(email, password, full_name, tier, email_verified=email_verified, roles=roles)
    if not email_verified:
        verification.send_verification(user)
    signals.user_registered.send(current_app._get_current_object(), user=user, by_admin=True, actor_id=actor.id,
                                 roles=user.role_names)
    return user


def update_user(actor: User, user: User, changes: dict) -> User:
    """Stage `actor`'s changes to `user`; deactivating, or taking a role away, ends the user's sessions at
    once."""
    # Decided from the row as it is now (its address unconfirmed, its roles), not as read before a concurrent
    # commit (a confirmation link followed meanwhile); taken before the admin role's lock, as everywhere else.
    lock_row(user)
    _check_not_self(actor, user, "change")
    _check_may_manage(actor, user.roles, "change this user")
    new_roles = changes.get("roles")
    removed = set(user.role_names) - set(new_roles) if new_roles is not None else set()
    if new_roles is not None:
        changed = set(new_roles) ^ set(user.role_names)
        _check_may_manage(actor, [role(name) for name in changed], "grant or remove these roles")
    deactivating = changes.get("is_active") is False and user.is_active
    unverifying = changes.get("email_verified") is False and user.email_verified
    stays_admin = (ADMIN_ROLE in new_roles if new_roles is not None else ADMIN_ROLE in user.role_names) \
        and changes.get("is_active", user.is_active)
    guard_last_admin(user, stays_admin)
    moving = "email" in changes and changes["email"].lower() != user.email.lower()
    # The trail names the admin, and what a privileged change did: the roles the user now holds and where an
    # address moved (moving an address, then resetting the password, hands over the account).
    audit = {"actor_id": actor.id, **({"old_email": user.email, "email": changes["email"]} if moving else {})}
    if moving:
        check_email_free(changes["email"])
        user.email = changes["email"]
        email_taken_if_conflict()  # an account registered meanwhile takes it first
        # Unproven until a link to it is followed, unless the admin vouches for it in this very change.
        user.email_verified = False
    for name in ("full_name", "email_verified", "is_active"):
        if name in changes:
            setattr(user, name, changes[name])
    if "tier" in changes:
        user.tier = check_tier(changes["tier"])
    if new_roles is not None:
        user.roles = [role(name) for name in sorted(set(new_roles))]
        audit["roles"] = user.role_names
    if moving or deactivating:
        # An admin moves an account, or disables it, most often because its mailbox or its sessions can no longer
        # be trusted: links already mailed (a password reset to the old address, a pending change of address)
        # must not outlive that, nor reopen the account when it is enabled again.
        onetime.invalidate(user.id, onetime.PASSWORD_RESET, onetime.EMAIL_CHANGE)
    if moving and not user.email_verified:
        verification.send_verification(user)
    if deactivating:
        revoke_user_sessions(user.id, "account_deactivated")
    elif moving:
        # Access tokens carry the address, and gateways pass it on (`X-User-Email`) until they expire.
        revoke_user_sessions(user.id, "email_changed")
    elif removed:
        # Roles travel in access tokens, which gateways trust (`/auth/verify?role=`) until they expire: taking a
        # role away ends the user's sessions, so it takes effect at once, as deactivation does. A granted role
        # arrives with the next token.
        revoke_user_sessions(user.id, "roles_removed")
    elif unverifying:
        # Access tokens carry email_verified, and gateways pass it on (X-User-Email-Verified); refresh does not
        # look at it, nor at REQUIRE_VERIFIED_EMAIL: withdrawing a verification ends the sessions that vouch for it.
        revoke_user_sessions(user.id, "email_unverified")
    user.updated_at = utcnow()
    signals.user_updated.send(current_app._get_current_object(), user=user, fields=sorted(changes), by_admin=True,
                              **audit)
    return user


def delete_user(actor: User, user: User) -> None:
    """Stage a hard delete by `actor` (sessions, tokens and identities go with it)."""
    lock_row(user)
    _check_not_self(actor, user, "delete")
    _check_may_manage(actor, user.roles, "delete this user")
    guard_last_admin(user, stays_admin=False)
    signals.user_deleted.send(current_app._get_current_object(), user_id=user.id, email=user.email,
                              actor_id=actor.id)
    db.session.delete(user)
