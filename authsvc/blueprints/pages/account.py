"""The account page: profile, email change, resend verification, sessions, password."""
from flask import flash, g, redirect, request, url_for

from ...errors import APIError, finish_transaction
from ...extensions import db
from ...limits import limit_mail_per_address, new_address, signed_in_address
from ...services import accounts, identities, sessions, verification
from . import bp, limit_posts, page, signin_required
from .browser import form_errors, signed_out
from .forms import ButtonForm, ChangePasswordForm, ProfileForm


def _account(profile=None, password=None, status=200):
    profile = profile or ProfileForm(formdata=None, full_name=g.user.full_name, email=g.user.email)
    return page("account.html", status, user=g.user, profile=profile, password=password or ChangePasswordForm(
        formdata=None), button=ButtonForm(), sessions=sessions.live_sessions(g.user.id),
        current=str(g.session_id), identities=identities.of_user(g.user))


def _back(message: str):
    flash(message)
    return redirect(url_for("pages.account"))


@bp.get("/account")
@signin_required
def account():
    """The signed-in user's account."""
    return _account()


@bp.post("/account/profile")
@signin_required
@limit_posts("RATELIMIT_PROFILE_WRITE")
@limit_mail_per_address(methods=["POST"], address=new_address)  # a change of address mails the new one
def update_profile():
    """Change the name, or ask to change the address (pending until the new one is confirmed)."""
    form = ProfileForm()
    if form.validate_on_submit():
        try:
            accounts.update_profile(g.user, (form.full_name.data or "").strip(), form.email.data, g.session_id)
        except APIError as exc:
            db.session.rollback()
            form_errors(form, exc, default_field="email")
        else:
            db.session.commit()
            changed = form.email.data.lower() != g.user.email.lower()
            return _back("Saved. Follow the link we sent to the new address to finish the change." if changed
                         else "Saved.")
    return _account(profile=form, status=400)


@bp.post("/account/resend-verification")
@signin_required
@limit_posts("RATELIMIT_MAIL_REQUEST")
@limit_mail_per_address(methods=["POST"], address=signed_in_address)  # the API's resend shares this quota
def resend_verification():
    """Mail a new confirmation link to the account's address."""
    verification.resend(g.user.email)
    db.session.commit()
    return _back("If your address still needs confirming, a new link is on its way.")


@bp.post("/account/sessions/<session_id>/revoke")
@signin_required
def revoke_session(session_id: str):
    """Sign out one session of this account (this browser's too, if chosen)."""
    sessions.revoke_session(sessions.session_of(g.user.id, session_id), "session_revoked")
    db.session.commit()
    if session_id == str(g.session_id):
        return signed_out()
    return _back("That session was signed out.")


@bp.post("/account/sessions/revoke-all")
@signin_required
def revoke_all():
    """Sign out everywhere, this browser included."""
    sessions.revoke_user_sessions(g.user.id, "logout_all")
    db.session.commit()
    return signed_out()


@bp.post("/account/password")
@signin_required
@limit_posts("RATELIMIT_PASSWORD_CHANGE")
def change_password():
    """Change the password: this browser stays signed in, every other session ends."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            accounts.change_password(g.user, form.current_password.data, form.new_password.data, g.session_id,
                                     request.remote_addr or "")
        except APIError as exc:
            finish_transaction(exc.persist)  # a failed password check is counted (the throttle)
            form_errors(form, exc, default_field="current_password")
        else:
            db.session.commit()
            return _back("Password changed. Your other sessions were signed out.")
    return _account(password=form, status=400)


@bp.post("/account/identities/<identity_id>/unlink")
@signin_required
@limit_posts("RATELIMIT_PROFILE_WRITE")
def unlink_identity(identity_id: str):
    """Unlink a Google account (refused when it is the last way to sign in)."""
    try:
        identities.unlink(g.user, identity_id)
    except APIError as exc:
        db.session.rollback()
        return _back(exc.message)
    db.session.commit()
    return _back("The Google account was unlinked.")
