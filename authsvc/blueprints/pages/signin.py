"""Pages for signing in and out, signing up, and following mailed links."""
from flask import current_app, flash, g, redirect, request, url_for

from ...database import writes
from ...errors import APIError, finish_transaction
from ...extensions import db
from ...limits import limit_mail_per_address, limit_password_sign_in
from ...services import accounts, onetime, recovery, sessions, signup, verification
from . import bp, limit_posts, page
from .browser import form_errors, safe_next, signed_out, start_browser_session
from .forms import ButtonForm, EmailForm, LoginForm, NewPasswordForm, SignupCompleteForm, SignupForm


def _meta():
    return request.headers.get("User-Agent", ""), request.remote_addr or ""


@bp.route("/login", methods=["GET", "POST"])
@limit_password_sign_in(methods=["POST"])
def login():
    """Sign in with email and password."""
    form = LoginForm()
    target = request.args.get("next")
    if g.user is not None and request.method == "GET":
        return redirect(safe_next(target))
    if form.validate_on_submit():
        try:
            user = accounts.authenticate(form.email.data, form.password.data, _meta()[1])
        except APIError as exc:
            if exc.status == 429:
                raise  # the error page, with Retry-After
            finish_transaction(exc.persist)
            form_errors(form, exc)
        else:
            return start_browser_session(user, target)
    return page("login.html", 200 if request.method == "GET" else 400, form=form, next=target)


@bp.post("/logout")
def logout():
    """End this browser's session (CSRFProtect has checked the form's token)."""
    if g.user is not None:
        sessions.revoke_session(sessions.session_of(g.user.id, str(g.session_id)), "logout")
        db.session.commit()
    return signed_out()


@bp.route("/signup", methods=["GET", "POST"])
@limit_posts("RATELIMIT_REGISTER")
def signup_page():
    """Create an account; the browser is signed in (or asked to confirm the address first)."""
    form, target = SignupForm(), request.args.get("next")
    if form.validate_on_submit():
        try:
            user = accounts.register(form.email.data, form.password.data, (form.full_name.data or "").strip())
        except APIError as exc:
            db.session.rollback()
            form_errors(form, exc, default_field="email")
        else:
            if current_app.config["REQUIRE_VERIFIED_EMAIL"]:
                db.session.commit()
                return page("message.html", title="Check your mail",
                            text=f"We sent a link to {user.email}. Follow it to confirm your address, then sign in.")
            return start_browser_session(user, target)
    return page("signup.html", 200 if request.method == "GET" else 400, form=form, next=target)


@bp.route("/signup/complete/<token>", methods=["GET", "POST"])
@limit_posts("RATELIMIT_REGISTER")
def signup_complete(token: str):
    """Finish a two-step signup: GET shows the form (mail scanners prefetch links), POST uses the token."""
    try:
        email = signup.check_link(token)
    except APIError:
        return _invalid_link()
    form = SignupCompleteForm()
    if form.validate_on_submit():
        try:
            user = signup.complete(token, form.password.data, (form.full_name.data or "").strip())
        except APIError as exc:
            db.session.rollback()
            if exc.code == "invalid_token":
                return _invalid_link()
            form_errors(form, exc, default_field="password")
        else:
            return start_browser_session(user, None)
    return page("signup_complete.html", 200 if request.method == "GET" else 400, form=form, email=email)


@bp.get("/verify-email/<token>")
@writes
def verify_email(token: str):
    """Confirm a new account's address in one click from the mail."""
    try:
        verification.pending_change(token)
    except APIError:
        return _confirmed(token, (onetime.VERIFY_EMAIL,))
    # A change-of-address link mailed before such links had a page of their own: confirmed there, not on GET.
    return redirect(url_for("pages.confirm_email_change", token=token))


@bp.route("/confirm-email-change/<token>", methods=["GET", "POST"])
@writes
def confirm_email_change(token: str):
    """Confirm a change of address: GET shows what would change without using the link, POST confirms.

    Not in one click: a mail scanner opening the link would otherwise attach this address, verified, to whatever
    account asked for it.
    """
    try:
        new_email = verification.pending_change(token)
    except APIError:
        return _invalid_link()
    form = ButtonForm()
    if form.validate_on_submit():
        return _confirmed(token, (onetime.EMAIL_CHANGE,))
    return page("confirm_email_change.html", 200 if request.method == "GET" else 400, form=form,
                new_email=new_email)


def _confirmed(token: str, purposes: tuple[str, ...]):
    try:
        user = verification.verify(token, purposes)
    except APIError as exc:
        db.session.rollback()
        return _invalid_link() if exc.code == "invalid_token" else page(
            "message.html", 409, title="Address taken", text=exc.message)
    db.session.commit()
    return page("message.html", title="Address confirmed", text=f"{user.email} is confirmed.",
                link=url_for("pages.account") if g.user else url_for("pages.login"), link_text="Continue")


@bp.route("/password-reset", methods=["GET", "POST"])
@limit_posts("RATELIMIT_MAIL_REQUEST")
@limit_mail_per_address(methods=["POST"])
def reset_request():
    """Ask for a reset link; the answer is the same whether or not the address has an account."""
    form = EmailForm()
    if form.validate_on_submit():
        recovery.request_reset(form.email.data)
        db.session.commit()
        return page("message.html", title="Check your mail",
                    text="If the address has an account, a link to reset the password is on its way.")
    return page("reset_request.html", 200 if request.method == "GET" else 400, form=form)


@bp.route("/password-reset/<token>", methods=["GET", "POST"])
@limit_posts("RATELIMIT_MAIL_REQUEST")
def reset_confirm(token: str):
    """Choose a new password: GET shows the form without using the token, POST uses it."""
    try:
        recovery.check_link(token)
    except APIError:
        return _invalid_link()
    form = NewPasswordForm()
    if form.validate_on_submit():
        try:
            recovery.confirm_reset(token, form.new_password.data)
        except APIError as exc:
            db.session.rollback()
            form_errors(form, exc, default_field="new_password")
        else:
            db.session.commit()
            flash("Your password was changed and every session was signed out. Sign in with the new one.")
            return signed_out()
    return page("reset_confirm.html", 200 if request.method == "GET" else 400, form=form)


def _invalid_link():
    return page("message.html", 400, title="Link expired",
                text="This link is invalid, was already used, or has expired. Ask for a new one.",
                link=url_for("pages.reset_request"), link_text="Reset password")
