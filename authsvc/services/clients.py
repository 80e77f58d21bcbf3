"""Service clients: creation, authentication, client_credentials tokens, deletion."""
from __future__ import annotations

import hmac
import re
import secrets
import uuid

from flask import current_app
from sqlalchemy import bindparam, select

from .. import signals
from ..errors import APIError, validation_error
from ..extensions import db
from ..hotread import HotSelect
from ..readonly import reader
from ..models import ServiceClient
from ..config import SCOPE_PATTERN
from .tokens import expires_in, hash_token, issue_access_token

SCOPE = re.compile(SCOPE_PATTERN)


def check_scopes(scopes: list[str], field: str = "scopes") -> list[str]:
    """The scopes, deduplicated and sorted; 422 if one is malformed."""
    bad = [s for s in scopes if not SCOPE.match(s)]
    if bad:
        raise validation_error({field: [f"malformed scope: {bad[0][:64]!r}"]})
    return sorted(set(scopes))


def create(name: str, scopes: list[str], by: uuid.UUID | None = None) -> tuple[ServiceClient, str]:
    """Stage a new client (created by the admin `by`; None from the CLI); return it with its secret, which is
    shown this once and stored only hashed."""
    secret = secrets.token_urlsafe(32)
    client = ServiceClient(client_id="svc_" + secrets.token_hex(12), name=name, secret_hash=hash_token(secret),
                           scopes=check_scopes(scopes))
    db.session.add(client)
    # The audit event names who created it (as its user) and what it may do.
    signals.client_created.send(current_app._get_current_object(), client=client, user_id=by, scopes=client.scopes)
    return client, secret


# Built once, on the table: every introspection and client_credentials grant authenticates its client.
_clients = ServiceClient.__table__
_BY_CLIENT_ID = HotSelect(select(_clients.c.client_id, _clients.c.secret_hash, _clients.c.scopes).where(
    _clients.c.client_id == bindparam("client_id")))


def authenticate(client_id: str, secret: str):
    """The client these credentials belong to (its `client_id` and `scopes`), or None (compared in constant
    time)."""
    # No client id holds a NUL, and PostgreSQL refuses one in a query: such an id simply matches no client.
    client = None if "\x00" in client_id else _BY_CLIENT_ID.first(reader(), {"client_id": client_id})
    expected = client.secret_hash if client else hash_token("no such client")
    ok = hmac.compare_digest(expected, hash_token(secret))
    return client if client is not None and ok else None


def token_response(client, requested: str | None) -> dict:
    """An access token for the client (as `authenticate` gives it: no refresh token); 400 `invalid_scope` beyond
    the client's scopes."""
    scopes = sorted(set(requested.split())) if requested else list(client.scopes)
    if not set(scopes) <= set(client.scopes):
        raise APIError(400, "invalid_scope", "The client may not ask for these scopes.")
    token = issue_access_token(client.client_id, {"client_id": client.client_id, "scope": " ".join(scopes)})
    return {"access_token": token, "token_type": "bearer", "expires_in": expires_in(), "scope": " ".join(scopes)}


def get(client_uuid: str) -> ServiceClient:
    """The client with this id; 404 otherwise."""
    try:
        client = db.session.get(ServiceClient, uuid.UUID(client_uuid))
    except ValueError:
        client = None
    if client is None:
        raise APIError(404, "not_found", "No such client.")
    return client


def delete(client: ServiceClient, by: uuid.UUID | None = None) -> None:
    """Stage the deletion of a client (by the admin `by`): its tokens stop working (the blocklist check requires
    the client)."""
    db.session.delete(client)
    signals.client_deleted.send(current_app._get_current_object(), client_id=client.client_id, user_id=by)


def all_clients() -> list[ServiceClient]:
    """Every client, oldest first."""
    return list(db.session.scalars(select(ServiceClient).order_by(ServiceClient.created_at)))
