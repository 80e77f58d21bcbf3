"""Registration, sign-in, refresh, sign-out and sessions."""
from flask import g, jsonify

from ...database import commit_if_staged
from ...readonly import read_only
from ...auth import user_required
from ...extensions import db
from ...schemas import LoginIn, RefreshIn, RegisterIn, parse
from ...services import accounts, sessions
from ...limits import limit, limit_password_sign_in
from ...openapi import USER, document
from . import bp, client_meta


@bp.post("/auth/register")
@document(body=RegisterIn, responses={201: "User"}, errors={409: "email_taken"})
@limit("RATELIMIT_REGISTER")
def register():
    """Create an account → 201 User."""
    body = parse(RegisterIn)
    user = accounts.register(body.email, body.password, body.full_name, body.tier)
    db.session.commit()
    return jsonify(user.to_dict()), 201


@bp.post("/auth/login")
@document(body=LoginIn, responses={200: "TokenPair"},
          errors={401: "invalid_credentials", 403: ("account_disabled", "email_not_verified")})
@limit_password_sign_in()
def login():
    """Sign in with email and password → token pair."""
    body = parse(LoginIn)
    user_agent, ip = client_meta()
    user = accounts.authenticate(body.email, body.password, ip)
    pair = sessions.start_session(user, user_agent, ip)
    db.session.commit()
    return jsonify(pair)


@bp.post("/auth/refresh")
@document(body=RefreshIn, responses={200: "TokenPair"},
          errors={401: ("unauthorized", "token_expired", "token_revoked"), 403: "account_disabled"})
@limit("RATELIMIT_REFRESH")
def refresh():
    """Rotate a refresh token → new token pair."""
    body = parse(RefreshIn)
    pair = sessions.rotate(body.refresh_token, *client_meta())
    commit_if_staged()  # on PostgreSQL a winning rotation has committed itself (sessions.rotate)
    return jsonify(pair)


@bp.post("/auth/logout")
@document(auth=USER, responses={204: None})
@user_required
def logout():
    """End the caller's session → 204."""
    sessions.revoke_session(sessions.session_of(g.user.id, str(g.session_id)), "logout")
    db.session.commit()
    return "", 204


@bp.post("/auth/logout-all")
@document(auth=USER, responses={204: None})
@user_required
def logout_all():
    """End every session of the caller → 204."""
    sessions.revoke_user_sessions(g.user.id, "logout_all")
    db.session.commit()
    return "", 204


@bp.get("/auth/sessions")
@read_only
@document(auth=USER, responses={200: list["Session"]})
@user_required
def list_sessions():
    """The caller's live sessions."""
    current = str(g.session_id)
    return jsonify([s.to_dict(current) for s in sessions.live_sessions(g.user.id)])


@bp.delete("/auth/sessions/<session_id>")
@document(auth=USER, responses={204: None})
@user_required
def delete_session(session_id: str):
    """End one of the caller's sessions → 204; anyone else's → 404."""
    sessions.revoke_session(sessions.session_of(g.user.id, session_id), "session_revoked")
    db.session.commit()
    return "", 204
