"""Password hashing (Argon2id, with legacy bcrypt verification) and the password policy."""
from __future__ import annotations

import logging
import secrets
import time
import unicodedata
from functools import lru_cache
from importlib import resources

import bcrypt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

from .. import hashpool
from ..errors import validation_error

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
log = logging.getLogger(__name__)


def normalized(password: str) -> str:
    """The password as hashed and judged: Unicode NFKC (NIST SP 800-63B 5.1.1.2), so the same characters typed
    on another keyboard or platform (composed or combining accents, full-width letters) are the same password."""
    return password if password.isascii() else unicodedata.normalize("NFKC", password)


class Hasher:
    """Argon2id with the configured parameters, plus the dummy hash that unknown accounts are checked against.

    With `pool` (PASSWORD_HASH_SOCKET, set by gunicorn.conf.py) each Argon2 computation runs in the hashing pool
    (hashpool.py), and here only if the pool does not answer.
    """

    def __init__(self, time_cost: int, memory_cost: int, parallelism: int, pool: str = ""):
        self.argon2 = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self.pool, self._pool_warned = pool, 0.0
        # A login for an unknown email, or an account without a password, verifies against this hash so it
        # spends the same Argon2 work as a real one: response time does not reveal which accounts exist.
        self.dummy_hash = self.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        """Hash a new password (normalised) with Argon2id."""
        password = normalized(password)
        if self.pool:
            try:
                return hashpool.hash_password(self.pool, password)
            except hashpool.PoolUnavailable as exc:
                self._pool_down(exc)
        return self.argon2.hash(password)

    def _argon2_matches(self, stored: str, password: str) -> bool:
        if self.pool:
            try:
                return hashpool.verify(self.pool, stored, password)
            except hashpool.PoolUnavailable as exc:
                self._pool_down(exc)
        try:
            return self.argon2.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _pool_down(self, exc: Exception) -> None:
        # Hashing here is correct, only heavier on this worker's memory: say so, once a minute at most.
        if time.monotonic() - self._pool_warned > 60:
            self._pool_warned = time.monotonic()
            log.warning("the hashing pool did not answer (%s); hashing in the worker", exc)

    def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """Check `password` against `stored`; return (matches, replacement hash if the stored one is outdated)."""
        form = normalized(password)
        ok, replacement = self._verify_one(stored, form)
        if not ok and form != password:
            # A hash made before passwords were normalised (or by a service we replace) holds the text as typed.
            # Unknown accounts take this second check too, against the dummy hash: the work is the same.
            ok, _ = self._verify_one(stored, password)
            replacement = self.hash(form) if ok else None
        return ok, replacement

    def _verify_one(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        if stored and stored.startswith(BCRYPT_PREFIXES):
            return self._verify_bcrypt(stored, password)
        if not self._argon2_matches(stored or self.dummy_hash, password) or stored is None:
            return False, None
        return True, (self.hash(password) if self.argon2.check_needs_rehash(stored) else None)

    def _verify_bcrypt(self, stored: str, password: str) -> tuple[bool, str | None]:
        # bcrypt only ever saw the first 72 bytes; the services we replace truncated the same way.
        # `$2y$` (PHP) is the same algorithm as `$2b$`; normalise it for libraries that only know 2a/2b.
        candidate = "$2b$" + stored[4:] if stored.startswith("$2y$") else stored
        try:
            ok = bcrypt.checkpw(password.encode()[:72], candidate.encode())
        except ValueError:
            return False, None
        # A matching legacy hash is upgraded to Argon2id on this successful login.
        return ok, (self.hash(password) if ok else None)


def hasher() -> Hasher:
    """The app's hasher, built once from its settings."""
    found = current_app.extensions.get("authsvc.hasher")
    if found is None:
        cfg = current_app.config
        found = Hasher(cfg["ARGON2_TIME_COST"], cfg["ARGON2_MEMORY_COST"], cfg["ARGON2_PARALLELISM"],
                       pool=cfg["PASSWORD_HASH_SOCKET"])
        current_app.extensions["authsvc.hasher"] = found
    return found


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of the most common passwords (see authsvc/data/README.md)."""
    try:
        text = resources.files("authsvc").joinpath("data/common-passwords.txt").read_text("utf-8")
    except FileNotFoundError:
        return frozenset()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def policy_problems(password: str, email: str | None) -> list[str]:
    """What is wrong with `password` as a new password for the account `email` (empty when it is fine)."""
    cfg = current_app.config
    problems = []
    password = normalized(password)
    if len(password) < cfg["PASSWORD_MIN_LENGTH"]:
        problems.append(f"must be at least {cfg['PASSWORD_MIN_LENGTH']} characters")
    if len(password) > cfg["PASSWORD_MAX_LENGTH"]:
        return [f"must be at most {cfg['PASSWORD_MAX_LENGTH']} characters"]
    lowered = password.strip().lower()
    if email and (lowered == email.lower() or lowered == email.split("@")[0].lower()):
        problems.append("must not be the email address")
    if lowered in common_passwords():
        problems.append("is one of the most common passwords")
    return problems


def check_new_password(password: str, email: str | None, field: str = "password") -> None:
    """Raise a 422 `validation_error` on `field` if `password` breaks the policy."""
    problems = policy_problems(password, email)
    if problems:
        raise validation_error({field: problems})
