"""Response bodies of the API as pydantic models: the OpenAPI document's schemas, and the contract's shapes.

The views build these bodies as dicts (`to_dict()`); these models describe them, and the fuzz test checks
every response against them, so a body and its documentation cannot drift apart unnoticed.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    """Base of every documented response body; bodies may gain fields, so extra ones are allowed."""

    model_config = ConfigDict(extra="allow")


class User(Body):
    """The contract's User object; never a hash or a secret."""

    id: UUID
    email: str
    full_name: str
    email_verified: bool
    is_active: bool
    roles: list[str] = Field(examples=[["admin"]])
    tier: str = Field(examples=["free"])
    created_at: datetime
    updated_at: datetime


class TokenPair(Body):
    """Login, refresh, signup completion, Google sign-in: an access token and its single-use refresh token."""

    access_token: str = Field(description="JWT (RS256 or EdDSA), verifiable with /.well-known/jwks.json.")
    refresh_token: str = Field(description="Opaque, single-use: each refresh returns a new one.")
    token_type: Literal["bearer"]
    expires_in: int = Field(description="Seconds until the access token expires.")


class TokenResponse(Body):
    """RFC 6749 §5.1 answer of the token endpoint; `client_credentials` has `scope` and no refresh token."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str | None = Field(None, description="Password and refresh_token grants only.")
    scope: str | None = Field(None, description="client_credentials only: granted scopes, space-separated.")


class Session(Body):
    """One sign-in of the caller."""

    id: UUID
    user_agent: str
    ip_address: str
    created_at: datetime
    last_used_at: datetime
    current: bool = Field(description="Whether this is the session of the token making the request.")


class Identity(Body):
    """An external account (Google) linked to the caller: another way to sign in."""

    id: UUID
    provider: Literal["google"]
    email: str = Field(description="The provider's email address when the identity was linked.")
    created_at: datetime
    last_used_at: datetime | None


class IdentityList(Body):
    """The caller's linked identities."""

    items: list[Identity]


class Page(Body):
    """Pagination fields of the admin lists."""

    page: int
    per_page: int
    total: int


class UserPage(Page):
    """One page of users."""

    items: list[User]


class Client(Body):
    """A service client for the client_credentials grant (its secret is never shown again)."""

    id: UUID
    client_id: str
    name: str
    scopes: list[str]
    created_at: datetime


class ClientCreated(Client):
    """A new service client with its secret, shown this once."""

    client_secret: str


class AuditEvent(Body):
    """One auth event of the audit trail."""

    id: UUID
    event: str = Field(examples=["login_succeeded"])
    user_id: UUID | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    created_at: datetime
    details: dict[str, Any] | None


class AuditPage(Page):
    """One page of audit events, newest first."""

    items: list[AuditEvent]


class Introspection(Body):
    """RFC 7662 answer: the token's facts when it is live; only `active: false` otherwise."""

    active: bool
    sub: str | None = None
    scope: str | None = Field(None, description="Space-separated.")
    exp: int | None = None
    iat: int | None = None
    client_id: str | None = None
    sid: str | None = None
    token_type: Literal["access_token", "refresh_token"] | None = None
    iss: str | None = None
    aud: str | list[str] | None = None
    email: str | None = None
    roles: list[str] | None = None
    tier: str | None = None


class Accepted(Body):
    """The same answer whether or not the address has an account."""

    status: Literal["accepted"]
    message: str


class ErrorDetail(Body):
    """What went wrong: a stable snake_case code, a message for people, and per-field problems (422 only)."""

    code: str = Field(examples=["validation_error"])
    message: str
    fields: dict[str, list[str]] | None = None


class Error(Body):
    """The error envelope of every endpoint except the OAuth2 ones."""

    error: ErrorDetail


class OAuthError(Body):
    """RFC 6749 §5.2 error of the OAuth2 endpoints (any other failure there carries the contract's code)."""

    error: Literal["invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                   "unsupported_grant_type", "invalid_scope", "insufficient_scope", "method_not_allowed",
                   "payload_too_large", "rate_limited", "internal_error", "unavailable"]
    error_description: str


class Health(Body):
    """Liveness."""

    status: Literal["ok"]


class Readiness(Body):
    """Readiness: whether the database answers."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "down"]


class JWKS(Body):
    """The JSON Web Key Set: the public keys that verify access tokens, current and recently retired."""

    keys: list[dict[str, Any]]


class OpenIDConfiguration(Body):
    """Discovery document."""

    issuer: str
    jwks_uri: str
    token_endpoint: str
    revocation_endpoint: str
    introspection_endpoint: str
    grant_types_supported: list[str]


class OpenAPIDocument(Body):
    """This OpenAPI document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
