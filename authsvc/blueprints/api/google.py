"""Google sign-in for API clients (an ID token the app obtained itself), and the caller's linked identities."""
from flask import g, jsonify

from ...readonly import read_only
from ...auth import user_required
from ...extensions import db
from ...limits import limit
from ...openapi import USER, document
from ...schemas import GoogleIdTokenIn, parse
from ...services import google, identities, sessions
from . import bp, client_meta


@bp.post("/auth/google")
@document(body=GoogleIdTokenIn, responses={200: "TokenPair"},
          errors={401: "invalid_credentials", 403: ("account_disabled", "email_not_verified"),
                  404: "not_found", 409: "email_taken"},
          description="404 `not_found` when Google sign-in is not configured.")
@limit("RATELIMIT_LOGIN")
def google_sign_in():
    """Trade a Google ID token issued for our client id → token pair."""
    google.require_enabled()
    body = parse(GoogleIdTokenIn)
    claims = google.verify_id_token(body.id_token, body.nonce)
    user = identities.sign_in(google.PROVIDER, claims)
    pair = sessions.start_session(user, *client_meta())
    db.session.commit()
    return jsonify(pair)


@bp.get("/users/me/identities")
@read_only
@document(auth=USER, responses={200: "IdentityList"})
@limit("RATELIMIT_PROFILE_READ")
@user_required
def my_identities():
    """The caller's linked identities → {items: [...]}."""
    return jsonify({"items": [i.to_dict() for i in identities.of_user(g.user)]})


@bp.post("/users/me/identities/google")
@document(auth=USER, body=GoogleIdTokenIn, responses={201: "Identity"},
          errors={401: "invalid_credentials", 404: "not_found", 409: "conflict"})
@limit("RATELIMIT_PROFILE_WRITE")
@user_required
def link_google():
    """Link the Google account of an ID token to the caller → 201 identity."""
    google.require_enabled()
    claims = google.verify_id_token(parse(GoogleIdTokenIn).id_token)
    identity = identities.link(g.user, google.PROVIDER, claims)
    db.session.commit()
    return jsonify(identity.to_dict()), 201


@bp.delete("/users/me/identities/<identity_id>")
@document(auth=USER, responses={204: None}, errors={409: "conflict"})
@limit("RATELIMIT_PROFILE_WRITE")
@user_required
def unlink_identity(identity_id: str):
    """Unlink one of the caller's identities (not the last way to sign in) → 204."""
    identities.unlink(g.user, identity_id)
    db.session.commit()
    return "", 204
