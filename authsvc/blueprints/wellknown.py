"""Discovery and health: JWKS, OpenID configuration, liveness and readiness."""
from flask import Blueprint, current_app, jsonify, url_for
from sqlalchemy import text

from ..database import migration_head
from ..extensions import db, limiter
from ..openapi import document
from ..services import keys

bp = Blueprint("wellknown", __name__)


# Discovery and health are polled by machines (load balancers, every verifying service): never rate-limited.
@bp.get("/.well-known/jwks.json")
@document(responses={200: "JWKS"}, rate_limited=False)
@limiter.exempt
def jwks():
    """The public keys that verify our access tokens."""
    response = jsonify(keys.jwks())
    # No longer than a rotated key waits before it signs (SIGNING_KEY_CACHE_SECONDS + 2): a verifier behind an HTTP
    # cache must have the new key by then.
    response.headers["Cache-Control"] = f"public, max-age={current_app.config['SIGNING_KEY_CACHE_SECONDS']}"
    return response


@bp.get("/.well-known/openid-configuration")
@document(responses={200: "OpenIDConfiguration"}, rate_limited=False)
@limiter.exempt
def openid_configuration():
    """Discovery document: issuer, JWKS and the OAuth2 endpoints."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    return jsonify({
        "issuer": current_app.config["JWT_ISSUER"],
        "jwks_uri": base + url_for("wellknown.jwks"),
        "token_endpoint": base + url_for("api.token"),
        "revocation_endpoint": base + url_for("api.revoke"),
        "introspection_endpoint": base + url_for("api.introspect"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": [current_app.config["JWT_ALGORITHM"]],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    })


@bp.get("/healthz")
@document(responses={200: "Health"}, rate_limited=False)
@limiter.exempt
def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@document(responses={200: "Readiness", 503: "Readiness"}, rate_limited=False)
@limiter.exempt
def readyz():
    """Readiness: 200 when the database answers and its schema is at the code's migration head, 503 otherwise."""
    try:
        current = db.session.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except Exception:  # noqa: BLE001 - any failure to reach the database (or an unmigrated one) is "not ready"
        db.session.rollback()
        return jsonify({"status": "unavailable", "database": "down"}), 503
    head = migration_head()
    if current != [head]:
        # Serving against an older (or newer) schema would fail on the first query that differs.
        return jsonify({"status": "unavailable", "database": "ok", "schema": current, "expected": head}), 503
    return jsonify({"status": "ok", "database": "ok", "schema": head})
