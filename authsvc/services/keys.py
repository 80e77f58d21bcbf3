"""JWT signing keys: kept in the database so every instance shares them, cached in each process.

The private half is encrypted at rest with a key derived from SECRET_KEY. Public halves are stored as JWKs, so
an instance can verify every published key without decrypting anything. `JWT_PRIVATE_KEY_FILE` replaces the
active key with a PEM file's key.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from sqlalchemy import or_, select

from ..extensions import db
from ..models import SigningKey, utcnow

log = logging.getLogger(__name__)
UNKNOWN_KID_RELOAD_SECONDS = 5.0
# The public key type each JWT_ALGORITHM verifies with.
PUBLIC_KEY_TYPES = {"RS256": rsa.RSAPublicKey, "EdDSA": ed25519.Ed25519PublicKey}


class KeysUnavailable(Exception):
    """No usable signing key could be loaded (database down, or SECRET_KEY does not match the stored keys)."""


@dataclass
class KeyRing:
    """One process's snapshot of the keys: the active private key and every published public key."""

    active_kid: str | None = None
    active_private: object = None
    public: dict = field(default_factory=dict)
    jwks: list = field(default_factory=list)
    loaded_at: float = float("-inf")


def _fernet() -> MultiFernet:
    # Encrypts under SECRET_KEY; decrypts under it or any of SECRET_KEY_FALLBACKS, so a changed secret keeps the
    # keys stored under the old one usable until `keys rotate` has replaced them.
    secrets = [current_app.config["SECRET_KEY"], *current_app.config.get("SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([Fernet(base64.urlsafe_b64encode(HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"authsvc signing keys").derive(secret.encode())))
        for secret in secrets])


def _public_jwk(private_key, algorithm: str) -> dict:
    """The public JWK of a private key, with its RFC 7638 thumbprint as `kid`."""
    public = private_key.public_key()
    jwk = json.loads((RSAAlgorithm if algorithm == "RS256" else OKPAlgorithm).to_jwk(public))
    members = {k: jwk[k] for k in (("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x"))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "kid": kid, "alg": algorithm, "use": "sig"}


def _generate(algorithm: str):
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_signing_key(algorithm: str) -> SigningKey:
    """A fresh key pair as a SigningKey row (not yet added to the session)."""
    private = _generate(algorithm)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwk = _public_jwk(private, algorithm)
    return SigningKey(kid=jwk["kid"], algorithm=algorithm, private_key=_fernet().encrypt(pem), public_jwk=jwk)


def rotate() -> SigningKey:
    """Stage a new key, published at once and signing once every instance has had time to load it.

    Publish before signing: the current keys keep signing until `retired_at`, set one cache period (plus a
    margin) ahead, so by the time any instance signs with the new key every other instance's cached ring
    has expired and been reloaded with it. Otherwise a token could reach an instance that loaded its keys a
    moment before the rotation and be refused for a few seconds. Old keys stay published until their tokens
    expire.
    """
    now = utcnow()
    cache = current_app.config["SIGNING_KEY_CACHE_SECONDS"]
    handover = now + timedelta(seconds=cache + 2 if cache else 0)
    for key in db.session.scalars(select(SigningKey).where(
            or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > handover))):
        key.retired_at = handover
    key = new_signing_key(current_app.config["JWT_ALGORITHM"])
    key.created_at = now
    db.session.add(key)
    return key


def _publish_window() -> timedelta:
    # A retired key may still sign on an instance whose cache is stale, and its tokens live one access
    # lifetime after that: keep it in the JWKS for both, plus a minute of clock skew.
    cfg = current_app.config
    return cfg["JWT_ACCESS_TOKEN_EXPIRES"] + timedelta(seconds=cfg["SIGNING_KEY_CACHE_SECONDS"] + 60)


def _load() -> KeyRing:
    """Read the keys through a connection of their own, creating the first key on first start."""
    cfg = current_app.config
    algorithm = cfg["JWT_ALGORITHM"]
    oldest = utcnow() - _publish_window()
    query = select(SigningKey.__table__).where(
        or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > oldest)
    ).order_by(SigningKey.created_at.desc())
    with db.engine.connect().execution_options(authsvc_deferred=True) as conn, conn.begin():
        rows = conn.execute(query).all()

    def has_active(found) -> bool:
        """Whether any of `found` is an unretired key of the configured algorithm."""
        return any(r.retired_at is None and r.algorithm == algorithm for r in found)

    if not cfg.get("JWT_PRIVATE_KEY_FILE") and not has_active(rows):
        # First start: create the key in a write transaction of its own that takes SQLite's lock up front
        # (waiting its turn), and look again inside it so concurrent first starts create at most one each.
        with db.engine.connect().execution_options(authsvc_immediate=True) as conn, conn.begin():
            rows = conn.execute(query).all()
            if not has_active(rows):
                key = new_signing_key(algorithm)
                key.created_at = utcnow()
                conn.execute(SigningKey.__table__.insert().values(
                    kid=key.kid, algorithm=key.algorithm, private_key=key.private_key,
                    public_jwk=key.public_jwk, created_at=key.created_at, retired_at=None,
                ))
                log.info("generated the first %s signing key %s", algorithm, key.kid)
                rows.insert(0, key)
    ring = KeyRing(loaded_at=time.monotonic())
    signer = _signer(rows, algorithm)
    for row in rows:
        ring.jwks.append(row.public_jwk)
        loader = RSAAlgorithm if row.public_jwk["kty"] == "RSA" else OKPAlgorithm
        ring.public[row.kid] = loader.from_jwk(json.dumps(row.public_jwk))
        if row is signer:
            try:
                pem = _fernet().decrypt(row.private_key)
            except InvalidToken:
                raise KeysUnavailable("neither SECRET_KEY nor SECRET_KEY_FALLBACKS decrypts the active signing key"
                                      ) from None
            ring.active_kid, ring.active_private = row.kid, serialization.load_pem_private_key(pem, None)
    if cfg.get("JWT_PRIVATE_KEY_FILE"):
        _use_key_file(ring, cfg["JWT_PRIVATE_KEY_FILE"], algorithm)
    return ring


def _signer(rows, algorithm: str):
    """The key that signs now: the oldest one still serving out its term after a rotation (every instance
    has it), else the newest unretired one."""
    now = utcnow()
    live = [r for r in rows if r.algorithm == algorithm and (r.retired_at is None or r.retired_at > now)]
    finishing = sorted((r for r in live if r.retired_at is not None), key=lambda r: r.created_at)
    return finishing[0] if finishing else next((r for r in live if r.retired_at is None), None)


def _use_key_file(ring: KeyRing, path, algorithm: str) -> None:
    with open(path, "rb") as fh:
        private = serialization.load_pem_private_key(fh.read(), None)
    jwk = _public_jwk(private, algorithm)
    ring.active_kid, ring.active_private = jwk["kid"], private
    ring.public[jwk["kid"]] = private.public_key()
    ring.jwks.insert(0, jwk)


_lock = threading.Lock()


def ring(max_age: float | None = None) -> KeyRing:
    """The process's key ring, reloaded when older than `max_age` (default SIGNING_KEY_CACHE_SECONDS)."""
    state = current_app.extensions.setdefault("authsvc.keys", {"ring": KeyRing()})
    max_age = current_app.config["SIGNING_KEY_CACHE_SECONDS"] if max_age is None else max_age
    if time.monotonic() - state["ring"].loaded_at <= max_age:
        return state["ring"]
    with _lock:  # one loader at a time; the others take its result
        if time.monotonic() - state["ring"].loaded_at > max_age:
            try:
                state["ring"] = _load()
            except KeysUnavailable:
                raise
            except Exception as exc:
                if state["ring"].active_kid is None:
                    raise KeysUnavailable(f"signing keys could not be loaded: {exc.__class__.__name__}") from exc
                log.warning("keeping cached signing keys; reload failed: %s", exc.__class__.__name__)
    return state["ring"]


def signing_key() -> KeyRing:
    """The key ring, with an active signing key; KeysUnavailable if it has none."""
    current = ring()
    if current.active_kid is None:
        raise KeysUnavailable("no active signing key")
    return current


def public_key(kid: str | None):
    """The public key for `kid`, reloading once (at most every few seconds) for a kid this process has not seen."""
    current = ring()
    if kid in current.public:
        return current.public[kid]
    current = ring(max_age=UNKNOWN_KID_RELOAD_SECONDS)
    return current.public.get(kid)


def jwks() -> dict:
    """The JSON Web Key Set: the active key and retired keys whose tokens may still be alive."""
    return {"keys": list(ring().jwks)}


def warm() -> None:
    """Load the keys once before a request's own transaction starts, so first-start key creation never waits
    on that transaction's lock (SQLite). A failure here is left for the code that needs the keys to report."""
    state = current_app.extensions.get("authsvc.keys")
    if state is None or state["ring"].active_kid is None:
        try:
            ring()
        except Exception:  # noqa: BLE001 - reported where the keys are actually needed
            log.debug("signing keys not loaded yet", exc_info=True)
