"""Linked identities: signing in with a provider account, linking and unlinking, under rules that cannot be
used to take over an account.

- A known (provider, subject) signs in to the account it is linked to, whatever its email says today.
- An unknown subject whose email matches an account links to it only when the provider vouches for the email
  (`email_verified`, from the authority for that address) and the account has no password; otherwise the owner
  signs in with the password (or resets it) and links from /account. Without the first rule anyone could create
  a provider account with someone else's address and walk into their account; without the second, whoever
  pre-registered the address keeps a password into the owner's account once anything (a mail scanner) follows
  the verification link.
- If that matching account never confirmed its own address, its password is dropped and its sessions end when
  the provider's verified sign-in links it: whoever set that password never proved they own the address
  (the "pre-registration" takeover). The owner sets a password again through the reset flow.
- A new subject with a new email creates an account with no password, verified as the provider says.
- The last way to sign in (no password, one identity) cannot be unlinked.
"""
from __future__ import annotations

import uuid

from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from .. import signals
from ..database import lock_row, row_lock
from ..errors import APIError
from ..extensions import db
from ..models import LinkedIdentity, User, utcnow
from . import onetime, verification
from .accounts import check_may_sign_in, create_user
from .sessions import revoke_user_sessions
from .users import find_by_email


def _app():
    return current_app._get_current_object()


def find(provider: str, subject: str) -> LinkedIdentity | None:
    """The identity with this provider subject, if linked."""
    return db.session.scalars(select(LinkedIdentity).where(
        LinkedIdentity.provider == provider, LinkedIdentity.subject == subject)).first()


def of_user(user: User) -> list[LinkedIdentity]:
    """The user's linked identities, oldest first."""
    return list(db.session.scalars(select(LinkedIdentity).where(LinkedIdentity.user_id == user.id)
                                   .order_by(LinkedIdentity.created_at)))


def sign_in(provider: str, claims: dict) -> User:
    """The account a provider sign-in opens, linking or creating it by the rules above."""
    identity = find(provider, claims["sub"])
    if identity is not None:
        # Held until the commit, as a password sign-in holds it: a change that ends the user's sessions (a role
        # taken away) waits for this one, then ends its session too, rather than missing it.
        user = db.session.get(User, identity.user_id, with_for_update=row_lock(), populate_existing=True)
        identity.last_used_at = utcnow()
    else:
        user = find_by_email(claims["email"])
        if user is not None:
            lock_row(user)  # held until the commit, as above
        if user is None:
            user = create_user(claims["email"], None, claims["name"], email_verified=claims["email_verified"])
            if not user.email_verified:
                verification.send_verification(user)  # the provider did not vouch for it: we ask ourselves
            signals.user_registered.send(_app(), user=user, provider=provider)
        elif not claims["email_authoritative"]:  # see google.GOOGLE_MAIL_DOMAINS
            raise _sign_in_and_link()
        elif not user.email_verified:
            _reclaim(user)
        elif user.password_hash is not None:
            # A confirmed address does not make the password its owner's: whoever pre-registered the address
            # chose it, and a mail scanner opening the verification link (one click, by contract) confirms it
            # for them. Linking here would leave them a password into the owner's account; signing in with the
            # password first, or resetting it (which ends every session), shows whose it is.
            raise _sign_in_and_link()
        _add(user, provider, claims)
    # Kept on refusal: a new account made by this sign-in, and its verification mail, must survive it.
    check_may_sign_in(user, keep_changes=True)
    signals.login_succeeded.send(_app(), user=user, provider=provider)
    return user


def _sign_in_and_link() -> APIError:
    return APIError(409, "email_taken", "An account with this email address exists. Sign in with your password "
                    "(or reset it), then link your Google account from your account page.")


def _reclaim(user: User) -> None:
    """Take an unconfirmed account back from whoever registered it: the provider proved the address, this
    account's password never did (see the module docstring). Everything they could have set up goes: the
    password, the sessions, identities they linked, and pending email-change or reset links."""
    user.password_hash = None
    user.email_verified = True
    revoke_user_sessions(user.id, "identity_linked")
    db.session.execute(delete(LinkedIdentity).where(LinkedIdentity.user_id == user.id))
    onetime.invalidate(user.id, onetime.EMAIL_CHANGE, onetime.PASSWORD_RESET)


def link(user: User, provider: str, claims: dict) -> LinkedIdentity:
    """Link a provider account to a signed-in user (who proved both); 409 `conflict` if it is taken."""
    identity = find(provider, claims["sub"])
    if identity is not None:
        if identity.user_id == user.id:
            return identity
        raise APIError(409, "conflict", "This Google account is already linked to another account.")
    return _add(user, provider, claims)


def _add(user: User, provider: str, claims: dict) -> LinkedIdentity:
    if any(i.provider == provider for i in of_user(user)):  # one account per provider, for links and sign-ins
        raise APIError(409, "conflict", "Another Google account is linked; unlink it first.")
    identity = LinkedIdentity(id=uuid.uuid4(), user_id=user.id, provider=provider, subject=claims["sub"],
                              email=claims["email"], created_at=utcnow(), last_used_at=utcnow())
    db.session.add(identity)
    try:
        db.session.flush()  # two first sign-ins of one subject at once: the unique index lets one through
    except IntegrityError:
        raise APIError(409, "conflict", "This Google account was linked at the same moment; try again.") from None
    signals.google_linked.send(_app(), user=user, provider=provider, email=claims["email"])
    return identity


def unlink(user: User, identity_id) -> None:
    """Remove one of the user's identities; 409 `conflict` if it is their last way to sign in."""
    try:
        identity = db.session.get(LinkedIdentity, uuid.UUID(str(identity_id)))
    except ValueError:
        identity = None
    if identity is None or identity.user_id != user.id:
        raise APIError(404, "not_found", "No such linked account.")
    # Lock the user's row so an unlink cannot race another unlink (or a password removal) past this check.
    lock_row(user)
    others = db.session.scalar(select(func.count()).select_from(LinkedIdentity).where(
        LinkedIdentity.user_id == user.id, LinkedIdentity.id != identity.id))
    if user.password_hash is None and not others:
        raise APIError(409, "conflict", "This is the only way to sign in to the account. Set a password first "
                       "(through the password reset) before unlinking it.")
    db.session.delete(identity)
    signals.google_unlinked.send(_app(), user=user, provider=identity.provider)
