"""Settings: the only module that reads the environment (and `.env`).

Every setting is declared once in `Settings`, parsed and validated when the app is created, so a bad value
stops the process with one clear line (`ConfigError`) before anything is served.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

def _project_root() -> Path:
    """The source checkout when running from one (editable install), else the working directory."""
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "setup.cfg").exists() else Path.cwd()


PROJECT_ROOT = _project_root()
# A scope a service client may be granted (schemas.Scope, and INTROSPECTION_SCOPE below).
SCOPE_PATTERN = r"^[A-Za-z0-9:._/-]{1,64}$"
CommaList = list[str]  # given as one comma-separated string
ORIGIN_PATTERN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line meant for the operator."""


class Settings(BaseModel):
    """Every environment setting of the service, with its default and its validation."""

    # Read by `from_environment`, not pydantic-settings: that library costs every worker 4 MB of memory for a
    # job of ten lines (each setting is one scalar, or a comma-separated list).
    model_config = ConfigDict(extra="ignore")

    AUTHSVC_ENV: Literal["development", "production", "testing"] = "development"
    INSTANCE_PATH: Path = PROJECT_ROOT / "instance"
    DATABASE_URL: str = ""
    SECRET_KEY: str = ""
    # Earlier secret keys, still accepted while SECRET_KEY changes: they decrypt the signing keys stored under
    # them, and (Flask's own setting of this name) verify session cookies signed with them. New data uses
    # SECRET_KEY only.
    SECRET_KEY_FALLBACKS: CommaList = []
    PUBLIC_BASE_URL: str = "http://127.0.0.1:5000"

    JWT_ALGORITHM: Literal["RS256", "EdDSA"] = "RS256"
    JWT_PRIVATE_KEY_FILE: Path | None = None
    JWT_ISSUER: str = ""
    JWT_AUDIENCE: str = "authsvc"
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(30, ge=1, le=24 * 60)
    REFRESH_TOKEN_EXPIRE_DAYS: int = Field(7, ge=1, le=365)
    # A duplicate refresh of one token within this many seconds gets the same child back (multi-tab race).
    REFRESH_REUSE_GRACE_SECONDS: int = Field(5, ge=0, le=60)
    SIGNING_KEY_CACHE_SECONDS: int = Field(30, ge=0, le=3600)
    # Each worker remembers token checks this long; another instance's revocation is seen within it (< 1 s).
    TOKEN_CHECK_CACHE_SECONDS: float = Field(0.5, ge=0, lt=1)
    # Introspection (RFC 7662) answers any user's address and roles. Empty: every service client may ask, as the
    # contract has it; a scope: only clients granted it (least privilege).
    INTROSPECTION_SCOPE: str = Field("", pattern=f"^$|{SCOPE_PATTERN}")

    ARGON2_TIME_COST: int = Field(2, ge=1)
    ARGON2_MEMORY_COST: int = Field(19456, ge=8)
    ARGON2_PARALLELISM: int = Field(1, ge=1)
    # The hashing pool's socket (hashpool.py); gunicorn.conf.py sets it when it starts the pool. Empty: each
    # worker hashes for itself.
    PASSWORD_HASH_SOCKET: str = ""
    PASSWORD_MIN_LENGTH: int = Field(8, ge=1)
    PASSWORD_MAX_LENGTH: int = Field(256, ge=8, le=4096)
    MAX_CONTENT_LENGTH: int = Field(64 * 1024, ge=1024)

    MAIL_SERVER: str = ""
    MAIL_PORT: int = 25
    MAIL_USE_TLS: bool = False
    MAIL_USE_SSL: bool = False
    MAIL_USERNAME: str | None = None
    MAIL_PASSWORD: str | None = None
    MAIL_DEFAULT_SENDER: str = "authsvc <no-reply@localhost>"
    MAIL_TIMEOUT: float = Field(10, gt=0)
    # The outbox sender: a thread in every process, woken after each commit that queued mail, and polling
    # for retries; a failed send waits MAIL_RETRY_BASE_SECONDS * 2^attempts, at most MAIL_RETRY_MAX_SECONDS.
    MAIL_WORKER: bool = True
    MAIL_POLL_SECONDS: float = Field(5, gt=0)
    MAIL_RETRY_BASE_SECONDS: float = Field(5, gt=0)
    MAIL_RETRY_MAX_SECONDS: float = Field(3600, gt=0)
    RATELIMIT_MAIL_PER_ADDRESS: str = "3/hour"
    RATELIMIT_MAIL_REQUEST: str = "5/minute"

    AUDIT_RETENTION_DAYS: int = Field(90, ge=1)
    # `authsvc cleanup`: revoked or expired sessions, used or expired mail-link tokens and individually revoked
    # access tokens are kept this long after they stopped mattering; sent (or, after failing, dead) mail
    # is kept OUTBOX_RETENTION_DAYS.
    CLEANUP_GRACE_HOURS: int = Field(24, ge=0)
    OUTBOX_RETENTION_DAYS: int = Field(7, ge=1)
    # Brute-force protection per (account, source address): after LOGIN_BLOCK_AFTER failures the source is
    # blocked for LOGIN_BLOCK_SECONDS, doubling with each further failure up to LOGIN_BLOCK_MAX_SECONDS.
    LOGIN_BLOCK_AFTER: int = Field(5, ge=1)
    LOGIN_BLOCK_SECONDS: int = Field(60, ge=1)
    LOGIN_BLOCK_MAX_SECONDS: int = Field(3600, ge=1)
    LOGIN_FAILURE_WINDOW_SECONDS: int = Field(3600, ge=1)

    VERIFY_TOKEN_HOURS: float = Field(24, gt=0)
    SIGNUP_TOKEN_HOURS: float = Field(24, gt=0)
    RESET_TOKEN_MINUTES: float = Field(60, gt=0)
    # A change of address (which the reset flow can turn into the whole account) asks for a sign-in this recent.
    EMAIL_CHANGE_SIGNIN_MAX_AGE_MINUTES: float = Field(15, gt=0)

    GOOGLE_CLIENT_ID: str = ""
    GOOGLE_CLIENT_SECRET: str = ""
    GOOGLE_DISCOVERY_URL: str = "https://accounts.google.com/.well-known/openid-configuration"
    # Bound on each call to the provider (discovery, keys, code exchange), so a slow provider cannot hold workers.
    GOOGLE_TIMEOUT_SECONDS: float = Field(5, gt=0, le=60)
    # Clock difference tolerated on an ID token's exp/iat.
    GOOGLE_CLOCK_SKEW_SECONDS: int = Field(60, ge=0, le=600)

    RATELIMIT_ENABLED: bool = True
    RATELIMIT_STORAGE_URI: str = "memory://"
    # With the shared storage (Redis) down: true keeps serving and counts in each process's memory until it is
    # back (abuse limits stay per instance); false refuses every limited request with 503 `unavailable`.
    RATELIMIT_FAIL_OPEN: bool = True
    REDIS_URL: str = ""
    # Every endpoint without a limit of its own (forward-auth, health and discovery are exempt).
    RATELIMIT_DEFAULT: str = "300/minute"
    RATELIMIT_LOGIN: str = "5/minute"
    RATELIMIT_REGISTER: str = "5/minute"
    RATELIMIT_TOKEN: str = "5/minute"
    RATELIMIT_REFRESH: str = "10/minute"
    RATELIMIT_PROFILE_READ: str = "20/minute"
    RATELIMIT_PROFILE_WRITE: str = "10/minute"
    RATELIMIT_PASSWORD_CHANGE: str = "5/minute"

    CORS_ORIGINS: CommaList = []
    ALLOWED_REDIRECT_ORIGINS: CommaList = []
    REQUIRE_VERIFIED_EMAIL: bool = False
    TIERS: CommaList = ["free", "premium"]
    # The tiers a person may pick when registering themselves (`tier` at /auth/register); empty: any of TIERS, as
    # the contract has it. Apps that grant paid features by the token's `tier` list the unpaid ones here.
    REGISTER_TIERS: CommaList = []
    TRUSTED_PROXIES: int = Field(0, ge=0, le=10)
    # Rate limits and the brute-force throttle count an IPv6 client by its /N network (one subscriber's /64 by
    # default; 128 counts each address).
    IPV6_SOURCE_PREFIX: int = Field(64, ge=32, le=128)
    COOKIE_SECURE: bool = True

    DB_CONNECT_TIMEOUT: int = Field(5, ge=1)
    DB_STATEMENT_TIMEOUT_MS: int = Field(15000, ge=100)
    DB_POOL_SIZE: int = Field(10, ge=1)

    # Logs: one JSON object per line (default in production) or plain text (default elsewhere).
    LOG_FORMAT: Literal["json", "text"] | None = None
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Prometheus metrics at /metrics; with METRICS_TOKEN set, scrapes need `Authorization: Bearer <token>`.
    METRICS_ENABLED: bool = True
    METRICS_TOKEN: str = ""

    @field_validator("CORS_ORIGINS", "ALLOWED_REDIRECT_ORIGINS", "TIERS", "REGISTER_TIERS", "SECRET_KEY_FALLBACKS",
                     mode="before")
    @classmethod
    def _split_commas(cls, value):
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("RATELIMIT_DEFAULT", "RATELIMIT_LOGIN", "RATELIMIT_REGISTER", "RATELIMIT_TOKEN",
                     "RATELIMIT_REFRESH", "RATELIMIT_PROFILE_READ", "RATELIMIT_PROFILE_WRITE",
                     "RATELIMIT_PASSWORD_CHANGE", "RATELIMIT_MAIL_PER_ADDRESS", "RATELIMIT_MAIL_REQUEST")
    @classmethod
    def _rate_limit(cls, value):
        # Flask-Limiter only parses a limit when a request meets it, and then logs and skips one it cannot read:
        # a typo would switch that limit off without a word at start.
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit (for example 5/minute or 10 per hour)") from None
        return value

    @field_validator("CORS_ORIGINS")
    @classmethod
    def _exact_origins(cls, value):
        # Flask-CORS reads an entry holding regex characters as a regular expression matched at the start of the
        # Origin (`https://*.example.com` also allows `https://xexample.com.attacker.net`), and an origin never
        # has a path: only exact origins, or `*` alone (without credentials, as the API is served).
        for origin in value:
            if origin != "*" and not ORIGIN_PATTERN.match(origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], nothing after it)")
        return value

    @field_validator("PUBLIC_BASE_URL")
    @classmethod
    def _base_url(cls, value):
        # Every mailed link and the tokens' issuer are built on it: without a scheme or a host each link is dead.
        parts = urlsplit(value)
        parts.port  # raises ValueError on a port that is not a number in range
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
                or parts.username is not None:
            raise ValueError(f"{value!r} is not an http(s) URL (scheme://host[:port][/path])")
        return value

    @field_validator("TIERS")
    @classmethod
    def _tiers_not_empty(cls, value):
        if not value:
            raise ValueError("at least one tier is required")
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.PASSWORD_MIN_LENGTH > self.PASSWORD_MAX_LENGTH:
            raise ValueError("PASSWORD_MIN_LENGTH must not exceed PASSWORD_MAX_LENGTH")
        open_tiers = set(self.REGISTER_TIERS)
        if open_tiers and (open_tiers - set(self.TIERS) or self.TIERS[0] not in open_tiers):
            # The first tier is what every account made without a choice gets (signup links, Google sign-in).
            raise ValueError(f"REGISTER_TIERS must be tiers of TIERS and include the default, {self.TIERS[0]}")
        if self.MAIL_USE_TLS and self.MAIL_USE_SSL:
            raise ValueError("MAIL_USE_TLS and MAIL_USE_SSL exclude each other")
        if self.JWT_PRIVATE_KEY_FILE is not None and not os.access(self.JWT_PRIVATE_KEY_FILE, os.R_OK):
            raise ValueError(f"JWT_PRIVATE_KEY_FILE {self.JWT_PRIVATE_KEY_FILE} is not readable")
        if self.GOOGLE_CLIENT_ID and not self.GOOGLE_DISCOVERY_URL.startswith(("https://", "http://")):
            raise ValueError("GOOGLE_DISCOVERY_URL must be an http(s) URL")
        return self

    @classmethod
    def from_environment(cls, **given) -> "Settings":
        """The settings: `given`, else the environment, else `.env` in the working directory, else the defaults
        (names are case-sensitive; unknown names are ignored)."""
        names = cls.model_fields
        values = {name: value for name, value in dotenv_values(".env").items() if name in names and value is not None}
        values.update((name, value) for name, value in os.environ.items() if name in names)
        values.update(given)
        return cls(**values)

    def log_format(self) -> str:
        """LOG_FORMAT, or its default for AUTHSVC_ENV: JSON in production, text elsewhere."""
        return self.LOG_FORMAT or ("json" if self.AUTHSVC_ENV == "production" else "text")


def _is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_production(settings: Settings) -> None:
    """Refuse the development conveniences that are unsafe in front of the public; a loopback PUBLIC_BASE_URL
    (trying the production set-up on one machine) may still use http."""
    if not settings.SECRET_KEY:
        raise ConfigError("SECRET_KEY must be set in production")
    if len(settings.SECRET_KEY) < 32:
        raise ConfigError("SECRET_KEY must be at least 32 characters")
    if any(len(old) < 32 for old in settings.SECRET_KEY_FALLBACKS):
        raise ConfigError("SECRET_KEY_FALLBACKS: each must be at least 32 characters")
    if not settings.DATABASE_URL:
        # The embedded SQLite file would be one host's private database: an instance added later starts empty.
        raise ConfigError("DATABASE_URL must be set in production (the SQLite file under instance/ is for development)")
    if "PUBLIC_BASE_URL" not in settings.model_fields_set:
        # Its default is the development server's address: every mailed link would lead there, and tokens would
        # name it as their issuer.
        raise ConfigError("PUBLIC_BASE_URL must be set in production (where browsers reach the service)")
    if _is_loopback(urlsplit(settings.PUBLIC_BASE_URL).hostname):
        return
    if not settings.PUBLIC_BASE_URL.startswith("https://"):
        # Mailed links carry reset and verification tokens, and the pages set the session's cookies.
        raise ConfigError("PUBLIC_BASE_URL must be an https URL in production (links carry one-time tokens)")
    if not settings.COOKIE_SECURE:
        raise ConfigError("COOKIE_SECURE=false is refused in production: the session cookies would also go over http")


def normalize_database_url(url: str) -> str:
    """Return a SQLAlchemy URL for sqlite or PostgreSQL (psycopg 3 driver), or raise ValueError."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("DATABASE_URL is malformed") from None
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        return url
    raise ValueError(f"DATABASE_URL scheme {parsed.drivername!r} is not supported (use sqlite or postgresql)")


def _instance_secret(instance: Path) -> str:
    """Read the development secret from the instance folder, generating it on first start."""
    path = instance / "secret_key"
    if not path.exists():
        # Written whole into a private file of our own, then linked into place: the link fails if another
        # process got there first (two processes starting at once then share its secret), and nobody ever sees
        # the file empty, half-written, or readable by other users.
        fd, partial = tempfile.mkstemp(dir=instance, prefix=".secret_key-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(partial, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(partial)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ConfigError(f"{path} holds no usable secret (under 32 characters): delete it, or set SECRET_KEY")
    return secret


def load(overrides: dict | None = None) -> dict:
    """Build the Flask config from the environment and `overrides`; raise ConfigError on a bad setting."""
    overrides = dict(overrides or {})
    fields = {k: overrides.pop(k) for k in list(overrides) if k in Settings.model_fields}
    try:
        settings = Settings.from_environment(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"{where}: {first['msg']}") from None

    if settings.AUTHSVC_ENV == "production":
        _check_production(settings)

    instance = settings.INSTANCE_PATH.resolve()
    try:
        instance.mkdir(mode=0o700, parents=True, exist_ok=True)  # SQLite file, dev outbox: ours only
    except OSError as exc:
        raise ConfigError(f"INSTANCE_PATH {instance} cannot be created: {exc.strerror}") from None
    secret = settings.SECRET_KEY or _instance_secret(instance)
    try:
        database_url = normalize_database_url(settings.DATABASE_URL or f"sqlite:///{instance / 'authsvc.db'}")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    config = settings.model_dump()
    if settings.REDIS_URL and "RATELIMIT_STORAGE_URI" not in settings.model_fields_set:
        config["RATELIMIT_STORAGE_URI"] = settings.REDIS_URL  # one Redis for everything shared
    config.update(
        ENV=settings.AUTHSVC_ENV,
        INSTANCE_PATH=str(instance),
        SECRET_KEY=secret,
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(database_url, settings),
        JWT_ISSUER=settings.JWT_ISSUER or settings.PUBLIC_BASE_URL.rstrip("/"),
        # Flask-JWT-Extended: algorithms are pinned, so `alg: none` or HS256 with our public key is refused.
        JWT_ALGORITHM=settings.JWT_ALGORITHM,
        JWT_DECODE_ALGORITHMS=[settings.JWT_ALGORITHM],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES),
        JWT_TOKEN_LOCATION=["headers", "cookies"],
        JWT_COOKIE_SECURE=settings.COOKIE_SECURE,
        # Flask's session cookie carries form CSRF tokens and the Google sign-in state: same protections.
        SESSION_COOKIE_SECURE=settings.COOKIE_SECURE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        JWT_COOKIE_SAMESITE="Lax",
        JWT_COOKIE_CSRF_PROTECT=True,
        JWT_ACCESS_CSRF_HEADER_NAME="X-CSRF-Token",
        JWT_ERROR_MESSAGE_KEY="message",
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=settings.RATELIMIT_FAIL_OPEN,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=settings.RATELIMIT_FAIL_OPEN,
        # A dead Redis must cost a request milliseconds, not a hung worker.
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 1, "socket_timeout": 1},
        MAIL_SUPPRESS_SEND=False,
        LOG_FORMAT=settings.log_format(),
        # Shared by every process of this instance on this database (services/tokencache.py).
        TOKEN_CHECK_SIGNAL_FILE=str(
            instance / ("revocations-" + hashlib.sha256(database_url.encode()).hexdigest()[:16])),
    )
    config["JWT_ENCODE_ISSUER"] = config["JWT_DECODE_ISSUER"] = config["JWT_ISSUER"]
    config["JWT_ENCODE_AUDIENCE"] = config["JWT_DECODE_AUDIENCE"] = settings.JWT_AUDIENCE
    config.update(overrides)
    return config


def engine_options(url: str, settings: Settings) -> dict:
    """SQLAlchemy engine options: bounded timeouts so a lost database fails fast (idle connections are checked
    before use: authsvc/database.py)."""
    # A failed statement's message must not carry its parameters into the logs: they include password hashes.
    if url.startswith("sqlite"):
        # Writers wait for each other instead of failing at once with "database is locked".
        return {"connect_args": {"timeout": 30}, "hide_parameters": True}
    return {
        "hide_parameters": True,
        "pool_size": settings.DB_POOL_SIZE,
        "max_overflow": settings.DB_POOL_SIZE,
        "pool_timeout": settings.DB_CONNECT_TIMEOUT,
        "connect_args": {
            "connect_timeout": settings.DB_CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={settings.DB_STATEMENT_TIMEOUT_MS}",
        },
    }
