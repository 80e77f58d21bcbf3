"""The flows that go through a mailed link: two-step signup, email verification, password reset."""
from flask import jsonify

from ...extensions import db
from ...schemas import EmailIn, ResetConfirmIn, SignupCompleteIn, TokenIn, parse
from ...services import recovery, sessions, signup, verification
from ...limits import limit, limit_mail_per_address
from ...openapi import document
from . import bp, client_meta

# The same answer whether or not the address has an account: it must not reveal which addresses exist.
ACCEPTED = {"status": "accepted", "message": "If the address can receive it, a message is on its way."}


@bp.post("/auth/signup")
@document(body=EmailIn, responses={202: "Accepted"})
@limit("RATELIMIT_MAIL_REQUEST")
@limit_mail_per_address()
def signup_start():
    """Two-step signup, step 1: mail a link (or an 'account exists' notice) → 202."""
    body = parse(EmailIn)
    signup.start(body.email)
    db.session.commit()
    return jsonify(ACCEPTED), 202


@bp.post("/auth/signup/complete")
@document(body=SignupCompleteIn, responses={201: "TokenPair"},
          errors={400: "invalid_token", 409: "email_taken"})
@limit("RATELIMIT_REGISTER")
def signup_complete():
    """Two-step signup, step 2: set the password → 201 token pair."""
    body = parse(SignupCompleteIn)
    user = signup.complete(body.token, body.password, body.full_name)
    pair = sessions.start_session(user, *client_meta())
    db.session.commit()
    return jsonify(pair), 201


@bp.post("/auth/verify-email")
@document(body=TokenIn, responses={200: "User"}, errors={400: "invalid_token", 409: "email_taken"})
@limit("RATELIMIT_MAIL_REQUEST")
def verify_email():
    """Confirm an address with the mailed token → 200 User."""
    user = verification.verify(parse(TokenIn).token)
    db.session.commit()
    return jsonify(user.to_dict())


@bp.post("/auth/verify-email/resend")
@document(body=EmailIn, responses={202: "Accepted"})
@limit("RATELIMIT_MAIL_REQUEST")
@limit_mail_per_address()
def resend_verification():
    """Mail a new confirmation link if the address needs one → 202."""
    verification.resend(parse(EmailIn).email)
    db.session.commit()
    return jsonify(ACCEPTED), 202


@bp.post("/auth/password-reset/request")
@document(body=EmailIn, responses={202: "Accepted"})
@limit("RATELIMIT_MAIL_REQUEST")
@limit_mail_per_address()
def reset_request():
    """Mail a reset link if the address has an account → 202."""
    recovery.request_reset(parse(EmailIn).email)
    db.session.commit()
    return jsonify(ACCEPTED), 202


@bp.post("/auth/password-reset/confirm")
@document(body=ResetConfirmIn, responses={200: "User"}, errors={400: "invalid_token"})
@limit("RATELIMIT_MAIL_REQUEST")
def reset_confirm():
    """Set a new password with the mailed token; every session ends → 200 User."""
    body = parse(ResetConfirmIn)
    user = recovery.confirm_reset(body.token, body.new_password)
    db.session.commit()
    return jsonify(user.to_dict())
