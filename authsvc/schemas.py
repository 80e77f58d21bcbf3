"""JSON payloads: one pydantic model per request body, and the helper that turns failures into the envelope."""
from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from flask import request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import SkipJsonSchema

from .config import SCOPE_PATTERN
from .errors import APIError, validation_error

M = TypeVar("M", bound=BaseModel)


def storable_text(value: str) -> str:
    """`value` if a database can store it; ValueError for NUL characters and lone surrogates (PostgreSQL refuses
    them), so that they are a clear 422 (or a form error) rather than a failed statement."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 text") from None
    return value


def header_text(value: str | None, limit: int) -> str:
    """A request header's text as stored (User-Agent, client address): cut to `limit`, without NULs, which a
    server may let through and PostgreSQL refuses in text."""
    return (value or "").replace("\x00", "")[:limit]


def normalize_email(value: str) -> str:
    """An address checked for syntax and normalised (domain lowercased); ValueError if it is not one.

    Addresses are ASCII throughout: only ASCII before the @ (no SMTPUTF8 mailbox names), and an internationalised
    domain in its IDNA form. They are matched case-insensitively, and neither SQLite's nor PostgreSQL's (C locale)
    `lower()` folds non-ASCII letters, so such an account could not sign in with the address it registered; nor
    could a gateway's X-User-Email header or a mail server without SMTPUTF8 carry it.
    """
    value = value.strip()
    if not value.rpartition("@")[0].isascii():
        raise ValueError("must have only ASCII characters before the @")
    try:
        # Syntax only: no DNS lookups, so signing up never depends on the network and cannot be slowed by it.
        return validate_email(value, check_deliverability=False, allow_smtputf8=False).ascii_email
    except EmailNotValidError:
        raise ValueError("is not a valid email address") from None


Text = Annotated[str, AfterValidator(storable_text)]
Email = Annotated[str, Field(max_length=254, json_schema_extra={"format": "email"}), AfterValidator(storable_text),
                AfterValidator(normalize_email)]
# Long enough for any valid password; the policy (with its configured maximum) is checked by the service.
Password = Annotated[str, Field(min_length=1, max_length=4096, json_schema_extra={"format": "password"}),
                   AfterValidator(storable_text)]
Name = Annotated[str, Field(max_length=200), AfterValidator(storable_text), AfterValidator(str.strip)]
OpaqueToken = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(storable_text)]


class Payload(BaseModel):
    """Base of every request body: unknown fields are ignored, types are not coerced from other types."""

    model_config = ConfigDict(extra="ignore", strict=True)


class RegisterIn(Payload):
    email: Email
    password: Password
    full_name: Name = ""
    tier: Text | None = None


class LoginIn(Payload):
    email: Email
    password: Password


class RefreshIn(Payload):
    refresh_token: OpaqueToken


class ProfileIn(Payload):
    full_name: Name | None = None
    email: Email | None = None


class PasswordChangeIn(Payload):
    current_password: Password
    new_password: Password


class DeleteAccountIn(Payload):
    password: Password


def _messages(exc: ValidationError) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "is required"
        fields.setdefault(name, []).append(message)
    return fields


def parse(model: type[M]) -> M:
    """Parse the request's JSON body into `model`: 415 if it is not JSON, 400 if malformed, 422 if invalid."""
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "Send the body as application/json.")
    data = request.get_json(silent=True)
    if data is None:
        raise APIError(400, "bad_request", "The body is not valid JSON.")
    if not isinstance(data, dict):
        raise APIError(400, "bad_request", "The body must be a JSON object.")
    return validate(model, data)


def validate(model: type[M], data: dict) -> M:
    """`data` as `model`, or 422 `validation_error` with each field's messages (the API's rules, for the CLI too)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(_messages(exc)) from None


class EmailIn(Payload):
    email: Email


class TokenIn(Payload):
    token: OpaqueToken


class SignupCompleteIn(Payload):
    token: OpaqueToken
    password: Password
    full_name: Name = ""


class ResetConfirmIn(Payload):
    token: OpaqueToken
    new_password: Password


RoleName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.:-]+$")]


class AdminUserIn(Payload):
    email: Email
    password: Password | None = None
    full_name: Name = ""
    roles: list[RoleName] = Field(default_factory=list, max_length=32)
    tier: Text | None = None
    email_verified: bool = False


class AdminUserPatch(Payload):
    full_name: Name | None = None
    email: Email | None = None
    is_active: bool | None = None
    roles: list[RoleName] | None = Field(default=None, max_length=32)
    tier: Text | None = None
    email_verified: bool | None = None


# services.clients.check_scopes checks the pattern (with a clearer message); here it is documented.
Scope = Annotated[str, Field(max_length=64, json_schema_extra={"pattern": SCOPE_PATTERN})]


class ClientIn(Payload):
    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(storable_text)]
    scopes: list[Scope] = Field(default_factory=list, max_length=64)


class UserListQuery(BaseModel):
    """Query string of GET /admin/users (strings from the URL, converted)."""

    model_config = ConfigDict(extra="ignore")
    page: int = Field(1, ge=1, le=100000)
    per_page: int = Field(20, ge=1, le=100)
    q: Annotated[str, Field(max_length=200), AfterValidator(storable_text)] | None = None
    is_active: bool | None = None
    role: Annotated[str, Field(max_length=64), AfterValidator(storable_text)] | None = None


def parse_query(model: type[M]) -> M:
    """Parse the query string into `model`; 422 `validation_error` naming each bad parameter."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise validation_error(_messages(exc)) from None


class AuditQuery(BaseModel):
    """Query string of GET /admin/audit."""

    model_config = ConfigDict(extra="ignore")
    page: int = Field(1, ge=1, le=100000)
    per_page: int = Field(50, ge=1, le=200)
    user_id: Annotated[str, Field(max_length=64), AfterValidator(storable_text)] | None = None
    event: Annotated[str, Field(max_length=40), AfterValidator(storable_text)] | None = None


class GoogleIdTokenIn(Payload):
    # A compact JWS is three base64url parts; Google's ID tokens are about 1 KB. 8 KB bounds anything sane.
    id_token: Annotated[str, Field(min_length=1, max_length=8192), AfterValidator(storable_text)]
    # The nonce the client asked Google to put in the token: when sent, the token must carry exactly it, so a
    # token lifted from another sign-in (or replayed) is refused. Optional, as the contract names only id_token.
    nonce: Annotated[str, Field(min_length=1, max_length=512), AfterValidator(storable_text)] | None = None


# The OAuth2 form endpoints and forward-auth read their parameters by hand, to answer in RFC 6749 form (and,
# for forward-auth, only ever 200/401/403). These models describe those parameters for the OpenAPI document.
FormValue = Annotated[str, Field(min_length=1, max_length=4096)]


class OAuthForm(BaseModel):
    """Base of the OAuth2 forms: a service client may authenticate in the form instead of with HTTP Basic."""

    model_config = ConfigDict(extra="ignore")
    client_id: str | SkipJsonSchema[None] = Field(None, description="Service client (client_secret_post).")
    client_secret: str | SkipJsonSchema[None] = Field(
        None, json_schema_extra={"format": "password"}, description="Service client (client_secret_post).")


class TokenForm(OAuthForm):
    """POST /auth/token (RFC 6749). Each grant reads its own fields (required, 1 to 4096 characters) and
    ignores the others."""

    grant_type: Literal["password", "refresh_token", "client_credentials"]
    username: str | SkipJsonSchema[None] = Field(None, description="password grant: the email address.")
    password: str | SkipJsonSchema[None] = Field(
        None, json_schema_extra={"format": "password"}, description="password grant.")
    refresh_token: str | SkipJsonSchema[None] = Field(None, description="refresh_token grant.")
    scope: str | SkipJsonSchema[None] = Field(
        None, description="client_credentials grant (optional): space-separated, within the client's scopes.")


# RFC 7009 §2.1 and RFC 7662 §2.1: a hint the server does not know is ignored, not refused.
TokenTypeHint = Annotated[str, Field(examples=["access_token", "refresh_token"],
                                     description="`access_token` or `refresh_token`: the kind to try first.")]


class RevokeForm(OAuthForm):
    """POST /auth/revoke (RFC 7009): the token alone suffices."""

    token: FormValue
    token_type_hint: TokenTypeHint | SkipJsonSchema[None] = None


class IntrospectForm(OAuthForm):
    """POST /auth/introspect (RFC 7662): the caller authenticates as a service client."""

    token: FormValue
    token_type_hint: TokenTypeHint | SkipJsonSchema[None] = None


class ForwardAuthQuery(BaseModel):
    """Query string of GET /auth/verify."""

    model_config = ConfigDict(extra="ignore")
    role: Annotated[str, Field(max_length=64)] | SkipJsonSchema[None] = Field(
        None, description="403 unless the token holds this role.")
