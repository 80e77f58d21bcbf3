"""The OpenAPI document: valid, complete (every /api/v1 route), built from the validating models, and true.

"True" is checked by fuzzing: schemathesis generates requests from the live document and sends them to the
WSGI app, failing on any 5xx, an undocumented status or content type, or a body that does not match its
schema.
"""
import base64

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hypothesis_settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from authsvc.extensions import db
from authsvc.schemas import LoginIn, RegisterIn
from authsvc.services import sessions, users

from .conftest import remember

SPEC = "/api/v1/openapi.json"
IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def spec(client) -> dict:
    """The served OpenAPI document."""
    response = client.get(SPEC)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.json


def test_spec_is_valid_openapi_31(spec):
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    assert spec["openapi"] == "3.1.0" and spec["info"]["title"] == "authsvc"


def test_every_api_route_is_documented(app, spec):
    """A new endpoint under /api/v1 without `@document(...)` fails here (see authsvc/openapi/__init__.py)."""
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in sorted(rule.methods - IGNORED_METHODS):
            if method.lower() not in spec["paths"].get(path, {}):
                missing.append(f"{method} {rule.rule} (view {rule.endpoint})")
    assert not missing, "add @document(...) under the route decorator of: " + "; ".join(missing)


def test_well_known_and_health_are_documented(spec):
    for path in ("/.well-known/jwks.json", "/.well-known/openid-configuration", "/healthz", "/readyz"):
        assert "get" in spec["paths"][path], path


def test_request_schemas_are_the_validating_models(spec):
    schemas = spec["components"]["schemas"]
    register = spec["paths"]["/api/v1/auth/register"]["post"]["requestBody"]["content"]["application/json"]
    assert register["schema"] == {"$ref": "#/components/schemas/RegisterIn"}
    for model in (RegisterIn, LoginIn):
        generated = model.model_json_schema()
        assert set(schemas[model.__name__]["properties"]) == set(generated["properties"])
        assert schemas[model.__name__]["required"] == generated["required"]
    assert schemas["RegisterIn"]["properties"]["email"]["format"] == "email"
    assert schemas["RegisterIn"]["properties"]["password"]["maxLength"] == 4096


def test_security_schemes(spec):
    schemes = spec["components"]["securitySchemes"]
    bearer = schemes["bearerAuth"]
    assert (bearer["type"], bearer["scheme"], bearer["bearerFormat"]) == ("http", "bearer", "JWT")
    assert schemes["oauth2Password"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    assert schemes["clientBasic"]["scheme"] == "basic"
    me = spec["paths"]["/api/v1/users/me"]["get"]
    assert {"bearerAuth": []} in me["security"] and {"oauth2Password": []} in me["security"]
    assert spec["paths"]["/api/v1/auth/introspect"]["post"]["security"] == [{"clientBasic": []}]
    assert "security" not in spec["paths"]["/api/v1/auth/login"]["post"]


def test_error_responses_use_the_envelopes(spec):
    error, oauth_error = {"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/OAuthError"}
    register = spec["paths"]["/api/v1/auth/register"]["post"]["responses"]
    for status in ("400", "409", "413", "415", "422", "429", "503"):
        assert register[status]["content"]["application/json"]["schema"] == error, status
    assert "`email_taken`" in register["409"]["description"]
    assert "Retry-After" in register["429"]["headers"]
    admin = spec["paths"]["/api/v1/admin/users/{user_id}"]["get"]["responses"]
    assert {"401", "403", "404"} <= set(admin)
    token = spec["paths"]["/api/v1/auth/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]
    for status in ("400", "401", "413", "429", "503"):
        assert token["responses"][status]["content"]["application/json"]["schema"] == oauth_error, status
    assert "`invalid_grant`" in token["responses"]["400"]["description"]
    assert spec["components"]["schemas"]["Error"]["required"] == ["error"]


def test_forward_auth_documents_the_one_refusal_it_gives(spec, client):
    verify = spec["paths"]["/api/v1/auth/verify"]["get"]
    assert verify["responses"]["401"]["description"] == "Unauthorized: `unauthorized`"
    assert verify["security"] == spec["paths"]["/api/v1/users/me"]["get"]["security"]
    assert client.get("/api/v1/auth/verify").json["error"]["code"] == "unauthorized"


def test_response_models_describe_real_bodies(client, auth, admin, spec):
    """Spot checks with real answers; the fuzz test below checks every response it provokes."""
    pair = auth.signed_in()
    user = client.get("/api/v1/users/me", headers=auth.bearer(pair)).json
    assert set(spec["components"]["schemas"]["User"]["required"]) == set(user)
    assert set(spec["components"]["schemas"]["TokenPair"]["required"]) == set(pair)
    page = client.get("/api/v1/admin/users", headers=admin).json
    assert set(spec["components"]["schemas"]["UserPage"]["required"]) == set(page)


# --- fuzzing -----------------------------------------------------------------------------------------------


class Credentials:
    """An admin's access token (a new one after a fuzzed logout) and a service client's HTTP Basic header."""

    ENDS_SESSION = {"/api/v1/auth/logout", "/api/v1/auth/logout-all"}

    def __init__(self, app, admin_id: str, client_basic: str):
        self.app, self.admin_id, self.client_basic = app, admin_id, client_basic
        self.token: str | None = None

    def bearer(self) -> str:
        """The admin's current access token; a new session's when the last one was ended."""
        if self.token is None:
            with self.app.app_context():
                pair = sessions.start_session(users.get_user(self.admin_id), "fuzz", "127.0.0.1")
                db.session.commit()
            remember(pair["access_token"], pair["refresh_token"])
            self.token = pair["access_token"]
        return self.token

    def headers_for(self, case) -> dict:
        """HTTP Basic for introspection and revocation; none for the token endpoint (client credentials are
        fuzzed in its form); a Bearer token for everything else."""
        if case.path == "/api/v1/auth/token":
            return {}
        if case.path in ("/api/v1/auth/revoke", "/api/v1/auth/introspect"):
            return {"Authorization": self.client_basic}
        return {"Authorization": "Bearer " + self.bearer()}

    def seen(self, case, response) -> None:
        """Forget the token once a fuzzed call may have ended its session."""
        revoked = response.status_code == 401 and "token_revoked" in response.text
        if case.path in self.ENDS_SESSION or revoked:
            self.token = None


@pytest.fixture
def credentials(app, admin, client) -> Credentials:
    """Credentials of an admin (made by the `admin` fixture) and of a service client."""
    made = client.post("/api/v1/admin/clients", json={"name": "fuzz", "scopes": ["reports"]},
                       headers=admin).json
    remember(made["client_secret"])
    basic = base64.b64encode(f"{made['client_id']}:{made['client_secret']}".encode()).decode()
    with app.app_context():
        admin_id = str(users.find_by_email("admin@example.com").id)
    return Credentials(app, admin_id, "Basic " + basic)


def _describe(exc: BaseException) -> str:
    """A failure with its parts: schemathesis groups its findings, Hypothesis wraps flaky ones."""
    parts = [f"{type(exc).__name__}: {exc}"]
    parts += [f"  {type(e).__name__}: {e}" for e in getattr(exc, "exceptions", ())]
    return "\n".join(parts)


# Schema-valid data may still break a rule no schema states (the password policy, email syntax, an unknown
# one-time token), so valid data is not required to be accepted; invalid data must be refused (413 included).
CHECKS = SchemathesisConfig.from_dict({"checks": {
    "positive_data_acceptance": {"enabled": False},
    "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 409, 413, 415, 422, 429]},
}})
# Per operation and generation mode (valid, then invalid data): bounded, reproducible, no example database.
FUZZ = hypothesis_settings(max_examples=20, derandomize=True, deadline=None, database=None,
                           phases=[Phase.explicit, Phase.generate, Phase.shrink],
                           suppress_health_check=list(HealthCheck))


@pytest.mark.settings(RATELIMIT_ENABLED=False)
# schemathesis's own strategies draw from `random` in places; Hypothesis deprecates that (not ours to fix).
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_fuzz_the_api_against_its_document(app, credentials):
    """No 5xx; every status, content type, header and body as documented, for valid and invalid requests."""
    api = schemathesis.openapi.from_wsgi(SPEC, app, config=CHECKS)
    failures = []
    for result in api.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call_and_validate(headers=credentials.headers_for(case))
                credentials.seen(case, response)

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
                assert mode is GenerationMode.NEGATIVE
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - one run reports them all
                failures.append(f"{operation.label} ({mode.value}): {_describe(exc)}")
    assert not failures, "\n\n".join(failures)
