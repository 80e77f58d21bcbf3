"""The caller's own account."""
from flask import g, jsonify

from ...readonly import read_only
from ...auth import user_required, user_token_required
from ...errors import APIError
from ...extensions import db
from ...schemas import DeleteAccountIn, PasswordChangeIn, ProfileIn, parse
from ...services import accounts, users
from ...limits import limit, limit_mail_per_address, new_address
from ...openapi import USER, document
from . import bp, client_meta


@bp.get("/users/me")
@read_only
@document(auth=USER, responses={200: "User"})
@limit("RATELIMIT_PROFILE_READ")
@user_token_required
def me():
    """The caller's User."""
    user = users.profile(g.user_id)
    if user is None:  # deleted since the token was checked
        raise APIError(401, "unauthorized", "A user's access token is required.")
    return jsonify(user)


@bp.patch("/users/me")
@document(auth=USER, body=ProfileIn, responses={200: "User"},
          errors={403: "reauthentication_required", 409: "email_taken"})
@limit("RATELIMIT_PROFILE_WRITE")
@limit_mail_per_address(address=new_address)  # a change of address mails the new one its link
@user_required
def update_me():
    """Change the caller's profile → User."""
    body = parse(ProfileIn)
    accounts.update_profile(g.user, body.full_name, body.email, g.session_id)
    db.session.commit()
    return jsonify(g.user.to_dict())


@bp.delete("/users/me")
@document(auth=USER, body=DeleteAccountIn, responses={204: None},
          errors={401: "invalid_credentials", 409: "conflict"})
@limit("RATELIMIT_PROFILE_WRITE")
@user_required
def delete_me():
    """Deactivate the caller's account after checking the password → 204."""
    body = parse(DeleteAccountIn)
    accounts.deactivate(g.user, body.password, client_meta()[1])
    db.session.commit()
    return "", 204


@bp.post("/users/me/password")
@document(auth=USER, body=PasswordChangeIn, responses={204: None}, errors={401: "invalid_credentials"})
@limit("RATELIMIT_PASSWORD_CHANGE")
@user_required
def change_password():
    """Change the password; every other session ends → 204."""
    body = parse(PasswordChangeIn)
    accounts.change_password(g.user, body.current_password, body.new_password, g.session_id, client_meta()[1])
    db.session.commit()
    return "", 204
