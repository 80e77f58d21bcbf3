"""Google sign-in against a real OpenID provider process (tests/oidc), over HTTP: the redirect flow, the
ID-token exchange, the linking rules, and every failure answered with a page or the envelope."""
from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from authsvc.extensions import db
from authsvc.models import AuditEvent, LinkedIdentity, OneTimeToken, User
from authsvc.services import onetime

from .conftest import PASSWORD, dispose, make_app, remember
from .liveserver import free_port
from .smtpserver import links


class Google:
    """An app with Google sign-in pointed at the test provider, and the provider client it is registered as."""

    def __init__(self, provider, app, base, client_id, client_secret):
        self.provider, self.app, self.base = provider, app, base
        self.client_id, self.client_secret = client_id, client_secret
        self.client = app.test_client()

    @property
    def callback(self) -> str:
        """The redirect URI registered for the app."""
        return f"{self.base}/auth/google/callback"

    def id_token(self, email, verified=True, **kwargs) -> str:
        """An ID token the provider really issued to the app's client."""
        token = self.provider.id_token(self.client_id, self.client_secret, email, email_verified=verified,
                                       redirect_uri=self.callback, **kwargs)
        remember(token)
        return token

    def exchange(self, id_token, **kwargs):
        """POST /api/v1/auth/google."""
        return self.client.post("/api/v1/auth/google", json={"id_token": id_token}, **kwargs)

    def browser_flow(self, email, verified=True, consent=True, next_=None, start=None, **kwargs):
        """Follow the browser flow with the test client and the provider's own pages; the callback's response."""
        start = start or self.client.get("/auth/google/login" + (f"?next={next_}" if next_ else ""))
        assert start.status_code == 302, start.get_data(as_text=True)
        callback = self.provider.authorize(start.headers["Location"], email, email_verified=verified,
                                           consent=consent, **kwargs)
        assert callback.startswith(self.callback), callback
        return self.client.get(callback[len(self.base):])

    def user(self, email) -> User | None:
        """The user with this address, read fresh."""
        with self.app.app_context():
            return db.session.scalars(select(User).where(User.email == email)).first()

    def identities(self) -> list[tuple[str, str]]:
        """(email at link time, user email) of every linked identity."""
        with self.app.app_context():
            rows = db.session.execute(select(LinkedIdentity.email, User.email).join(
                User, User.id == LinkedIdentity.user_id)).all()
            return sorted(tuple(r) for r in rows)


def _google_app(provider, database_url, instance_path, smtp_server, client_meta=None, **overrides) -> Google:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client_id, secret = provider.register_client([f"{base}/auth/google/callback"], **(client_meta or {}))
    app = make_app(database_url, instance_path, PUBLIC_BASE_URL=base, GOOGLE_CLIENT_ID=client_id,
                   GOOGLE_CLIENT_SECRET=secret, GOOGLE_DISCOVERY_URL=provider.discovery_url,
                   GOOGLE_CLOCK_SKEW_SECONDS=0, MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_server.port,
                   MAIL_POLL_SECONDS=0.1, **overrides)
    return Google(provider, app, base, client_id, secret)


@pytest.fixture
def google(oidc_provider, database_url, tmp_path, smtp_server):
    """An app with Google sign-in configured against the test provider."""
    smtp_server.clear()
    g = _google_app(oidc_provider, database_url, tmp_path / "instance", smtp_server)
    yield g
    dispose(g.app)


def _register(google, email="user@example.com", verify=True):
    response = google.client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.json
    if verify:
        with google.app.app_context():
            db.session.get(User, uuid.UUID(response.json["id"])).email_verified = True
            db.session.commit()
    return response.json


def _claims(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- the API: ID-token exchange --------------------------------------------------------------------------------

def test_id_token_signs_up_a_new_user_without_password(google):
    response = google.exchange(google.id_token("new@example.com", name="New Person"))
    assert response.status_code == 200, response.json
    assert set(response.json) >= {"access_token", "refresh_token", "token_type", "expires_in"}
    me = google.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {response.json['access_token']}"})
    assert me.json["email"] == "new@example.com" and me.json["email_verified"] is True
    assert me.json["full_name"] == "New Person"
    assert google.user("new@example.com").password_hash is None
    # The same Google account signs in to the same user again.
    again = google.exchange(google.id_token("new@example.com"))
    assert _claims(again.json["access_token"])["sub"] == me.json["id"]
    assert google.identities() == [("new@example.com", "new@example.com")]


def test_a_known_subject_signs_in_even_after_its_email_changed(google):
    first = google.exchange(google.id_token("old@example.com", sub="stable-sub-1"))
    later = google.exchange(google.id_token("renamed@example.com", sub="stable-sub-1"))
    assert later.status_code == 200
    assert _claims(later.json["access_token"])["sub"] == _claims(first.json["access_token"])["sub"]
    assert google.user("renamed@example.com") is None


def test_a_verified_account_with_a_password_is_not_linked_by_email(google, smtp_server):
    """The pre-registration takeover that a confirmed address does not stop: someone registers the owner's
    address with a password of theirs, and a mail scanner opens the verification link (a GET confirms it)."""
    smtp_server.clear()
    user = _register(google, "owner@example.com", verify=False)
    squatter = google.client.post("/api/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD})
    link = _mailed_token(smtp_server, "owner@example.com", "/verify-email")
    assert google.app.test_client().get(f"/verify-email/{link}").status_code == 200  # the scanner, no cookies
    response = google.exchange(google.id_token("owner@example.com"))
    assert response.status_code == 409 and response.json["error"]["code"] == "email_taken"
    assert google.identities() == []
    assert google.client.get("/api/v1/users/me", headers=_bearer(squatter.json)).json["id"] == user["id"]


def test_a_verified_account_without_a_password_links(google):
    user = _register(google, "owner@example.com")
    with google.app.app_context():
        db.session.get(User, uuid.UUID(user["id"])).password_hash = None
        db.session.commit()
    response = google.exchange(google.id_token("owner@example.com"))
    assert response.status_code == 200 and _claims(response.json["access_token"])["sub"] == user["id"]
    with google.app.app_context():
        assert "google_linked" in db.session.scalars(select(AuditEvent.event)).all()


def test_unverified_provider_email_never_links_to_an_existing_account(google):
    _register(google, "victim@example.com")
    response = google.exchange(google.id_token("victim@example.com", verified=False))
    assert response.status_code == 409 and response.json["error"]["code"] == "email_taken"
    assert google.identities() == []


def test_unverified_provider_email_creates_an_unverified_user(google, smtp_server):
    response = google.exchange(google.id_token("fresh@example.com", verified=False))
    assert response.status_code == 200
    assert google.user("fresh@example.com").email_verified is False
    smtp_server.wait_for(lambda m: m["To"] == "fresh@example.com")  # we ask for confirmation ourselves


def _mailed_token(smtp_server, to: str, path: str) -> str:
    message = smtp_server.wait_for(lambda m: m["To"] == to and any(f"{path}/" in u for u in links(m)))
    return next(u for u in links(message) if f"{path}/" in u).rsplit("/", 1)[1]


@pytest.mark.parametrize("proof", ["verification link", "password reset"])
def test_an_identity_linked_on_an_unproven_address_goes_when_the_owner_proves_it(google, smtp_server, proof):
    # Someone signs in with a provider account that claims the owner's address without vouching for it: an
    # unconfirmed account, linked to them. The owner then proves the address through our own mail.
    squatter = google.id_token("owner@example.com", verified=False, sub="squatter-subject")
    assert google.exchange(squatter).status_code == 200
    if proof == "verification link":
        token = _mailed_token(smtp_server, "owner@example.com", "/verify-email")
        assert google.client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 200
    else:
        google.client.post("/api/v1/auth/password-reset/request", json={"email": "owner@example.com"})
        token = _mailed_token(smtp_server, "owner@example.com", "/password-reset")
        confirmed = google.client.post("/api/v1/auth/password-reset/confirm",
                                       json={"token": token, "new_password": "the owner's own passphrase 1"})
        assert confirmed.status_code == 200
    assert google.identities() == []
    assert google.user("owner@example.com").email_verified is True
    again = google.exchange(google.id_token("owner@example.com", verified=False, sub="squatter-subject"))
    assert again.status_code == 409 and again.json["error"]["code"] == "email_taken"


def test_pre_registered_unverified_account_loses_the_squatters_password(google):
    # Someone registered the owner's address with a password of their own and never confirmed it.
    squatter = _register(google, "owner@example.com", verify=False)
    pair = google.client.post("/api/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD}).json
    response = google.exchange(google.id_token("owner@example.com"))
    assert response.status_code == 200
    assert _claims(response.json["access_token"])["sub"] == squatter["id"]
    user = google.user("owner@example.com")
    assert user.password_hash is None and user.email_verified is True
    # The squatter's password and session are gone.
    assert google.client.post("/api/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD}
                              ).status_code == 401
    stale = google.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert stale.status_code == 401


def test_wrong_audience_is_refused(google, oidc_provider):
    other_id, other_secret = oidc_provider.register_client([google.callback])
    token = oidc_provider.id_token(other_id, other_secret, "aud@example.com", redirect_uri=google.callback)
    response = google.exchange(token)
    assert response.status_code == 401 and response.json["error"]["code"] == "invalid_credentials"
    assert google.user("aud@example.com") is None


@pytest.mark.sqlite_only  # the claims' rules, not the database, are under test
def test_a_token_for_another_audience_is_refused_even_naming_us_as_azp(google, oidc_provider):
    from authlib.oidc.core import CodeIDToken

    from authsvc.services import google as service

    with google.app.test_request_context():
        client = service._client()
        issuer = client.load_server_metadata()["issuer"]
        now = int(time.time())
        base = {"iss": issuer, "sub": "s", "iat": now, "exp": now + 60}
        for claims, valid in [({"aud": google.client_id}, True), ({"aud": "other", "azp": google.client_id}, False),
                              ({"aud": ["other", google.client_id], "azp": google.client_id}, True)]:
            token = CodeIDToken({**base, **claims}, {}, service._claims_options(client),
                                {"client_id": google.client_id, "nonce": None})
            if valid:
                token.validate()
            else:
                with pytest.raises(Exception, match="aud"):
                    token.validate()


@pytest.mark.sqlite_only  # the clock, not the database, is under test
def test_expired_id_token_is_refused(oidc_provider, database_url, tmp_path, smtp_server):
    google = _google_app(oidc_provider, database_url, tmp_path / "instance", smtp_server,
                         client_meta={"id_token_ttl": 3})
    try:
        token = google.id_token("late@example.com")
        assert google.exchange(token).status_code == 200  # fresh, it is good
        time.sleep(4.1)
        response = google.exchange(token)
        assert response.status_code == 401 and response.json["error"]["code"] == "invalid_credentials"
    finally:
        dispose(google.app)


def _forge(token: str, header: dict | None = None, claims: dict | None = None, signature: str | None = None):
    def enc(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    head, body, sig = token.split(".")
    old_header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return ".".join([enc({**old_header, **(header or {})}) if header else head,
                     enc({**_claims(token), **(claims or {})}) if claims else body,
                     sig if signature is None else signature])


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda t: _forge(t, claims={"email": "admin@example.com"}), id="payload-changed"),
    pytest.param(lambda t: _forge(t, header={"alg": "none"}, signature=""), id="alg-none"),
    pytest.param(lambda t: _forge(t, header={"alg": "HS256"}), id="alg-hs256"),
    pytest.param(lambda t: _forge(t, header={"kid": "unknown-kid"}), id="unknown-kid"),
    pytest.param(lambda t: t[:-8] + "AAAAAAAA", id="signature-changed"),
    pytest.param(lambda t: "not.a.jwt", id="garbage"),
    pytest.param(lambda t: "x" * 2000, id="no-dots"),
])
def test_tampered_id_tokens_are_refused(google, tamper):
    token = google.id_token("tamper@example.com")
    response = google.exchange(tamper(token))
    assert response.status_code == 401, response.json
    assert response.json["error"]["code"] == "invalid_credentials"
    assert google.user("tamper@example.com") is None


@pytest.mark.parametrize("body", [{}, {"id_token": ""}, {"id_token": 5}, {"id_token": "x" * 9000},
                                  {"id_token": "x", "nonce": ""}, {"id_token": "x", "nonce": 5},
                                  {"id_token": "x", "nonce": "n" * 513}])
def test_bad_bodies(google, body):
    response = google.client.post("/api/v1/auth/google", json=body)
    assert response.status_code == 422 and response.json["error"]["code"] == "validation_error"


def test_disabled_account_cannot_sign_in_with_google(google):
    google.exchange(google.id_token("gone@example.com"))
    with google.app.app_context():
        db.session.scalars(select(User).where(User.email == "gone@example.com")).one().is_active = False
        db.session.commit()
    response = google.exchange(google.id_token("gone@example.com"))
    assert response.status_code == 403 and response.json["error"]["code"] == "account_disabled"


@pytest.fixture
def as_google(google, oidc_provider, monkeypatch):
    """The test provider's issuer counted as Google's, so the rules for Google's own tokens apply."""
    from authsvc.services import google as service

    monkeypatch.setattr(service, "GOOGLE_ISSUERS", {*service.GOOGLE_ISSUERS, oidc_provider.issuer})
    return google


@pytest.mark.parametrize("verified_account", [True, False])
def test_google_is_no_authority_for_an_address_outside_its_own_domains(as_google, verified_account):
    """A consumer Google account made on owner@example.com keeps `email_verified: true` after its maker lost that
    mailbox (left the company, let the domain lapse): it must neither link to nor reclaim the account."""
    _register(as_google, "owner@example.com", verify=verified_account)
    response = as_google.exchange(as_google.id_token("owner@example.com", sub="former-owner"))
    assert response.status_code == 409 and response.json["error"]["code"] == "email_taken"
    assert as_google.identities() == [] and as_google.user("owner@example.com").password_hash is not None


def test_a_gmail_address_reclaims_an_unconfirmed_account(as_google):
    user = _register(as_google, "owner@gmail.com", verify=False)
    response = as_google.exchange(as_google.id_token("owner@gmail.com"))
    assert response.status_code == 200 and _claims(response.json["access_token"])["sub"] == user["id"]
    assert as_google.user("owner@gmail.com").password_hash is None


@pytest.mark.parametrize("verified_account", [True, False])
def test_a_disabled_account_is_neither_linked_nor_reclaimed(google, verified_account):
    _register(google, "off@example.com", verify=verified_account)
    with google.app.app_context():
        db.session.scalars(select(User).where(User.email == "off@example.com")).one().is_active = False
        db.session.commit()
    response = google.exchange(google.id_token("off@example.com"))
    # A confirmed account with a password is not linked by email at all; an unconfirmed one is not reclaimed.
    code = "email_taken" if verified_account else "account_disabled"
    assert response.status_code in (403, 409) and response.json["error"]["code"] == code
    assert google.identities() == [] and google.user("off@example.com").password_hash is not None


@pytest.mark.parametrize("token_nonce, sent, status", [
    ("n-0123456789", "n-0123456789", 200),
    ("n-0123456789", "another-nonce", 401),  # a token from another sign-in, or replayed
    (None, "n-0123456789", 401),  # the client asked for a nonce the token does not carry
    ("n-0123456789", None, 200),  # no nonce sent: the contract's plain exchange
])
def test_an_id_token_carries_the_nonce_the_client_sends(google, token_nonce, sent, status):
    token = google.id_token("nonce@example.com", nonce=token_nonce)
    body = {"id_token": token, **({"nonce": sent} if sent else {})}
    response = google.client.post("/api/v1/auth/google", json=body)
    assert response.status_code == status
    if status == 401:
        assert response.json["error"]["code"] == "invalid_credentials"


def test_the_providers_keys_are_fetched_again_once_they_are_old(google, monkeypatch):
    """Authlib keeps the key set for the process's life: a key the provider withdraws must stop being trusted."""
    import time as clock

    from authsvc.services import google as service

    assert google.exchange(google.id_token("keys@example.com")).status_code == 200
    cached = google.app.extensions[service.EXTENSION].server_metadata
    cached["jwks"] = {**cached["jwks"], "as_fetched_before": True}
    assert google.exchange(google.id_token("keys@example.com")).status_code == 200
    assert cached["jwks"].get("as_fetched_before")  # still the cached set: nothing fetched for nothing
    later = clock.monotonic() + service.PROVIDER_MAX_AGE_SECONDS + 1
    monkeypatch.setattr(service, "monotonic", lambda: later)
    assert google.exchange(google.id_token("keys@example.com")).status_code == 200
    assert "as_fetched_before" not in cached["jwks"]


def _an_hour_on(monkeypatch):
    """Move the Google service's clock past the age at which it fetches the provider's documents again."""
    import time as clock

    from authsvc.services import google as service

    later = clock.monotonic() + service.PROVIDER_MAX_AGE_SECONDS + 1
    monkeypatch.setattr(service, "monotonic", lambda: later)


def test_the_discovery_document_is_fetched_again_once_it_is_old(google, monkeypatch):
    """Authlib keeps the discovery document for the process's life: a field the provider changes must be followed."""
    from authsvc.services import google as service

    assert google.exchange(google.id_token("doc@example.com")).status_code == 200
    cached = google.app.extensions[service.EXTENSION].server_metadata
    issuer = cached["issuer"]
    cached["issuer"] = issuer + "/as-it-was"  # as if the provider had since moved its issuer to the real one
    assert google.exchange(google.id_token("doc@example.com")).json["error"]["code"] == "invalid_credentials"
    _an_hour_on(monkeypatch)
    assert google.exchange(google.id_token("doc@example.com")).status_code == 200
    assert cached["issuer"] == issuer


def test_a_failed_refresh_of_the_discovery_document_keeps_the_one_we_had(google, monkeypatch, caplog):
    """The provider briefly unreachable when the document is due: sign-in goes on with the document fetched before."""
    from authsvc.services import google as service

    assert google.exchange(google.id_token("doc@example.com")).status_code == 200
    client = google.app.extensions[service.EXTENSION]
    # Authlib's own attribute: where the document is fetched from, pointed at a port nothing listens on.
    monkeypatch.setattr(client, "_server_metadata_url", f"http://127.0.0.1:{free_port()}/.well-known/x")
    _an_hour_on(monkeypatch)
    assert google.exchange(google.id_token("doc@example.com")).status_code == 200
    assert "discovery document" in caplog.text and "_loaded_at" in client.server_metadata


def test_routes_404_and_no_button_when_not_configured(client):
    assert client.post("/api/v1/auth/google", json={"id_token": "x"}).json["error"]["code"] == "not_found"
    assert client.get("/auth/google/login").status_code == 404
    assert client.get("/auth/google/callback?code=x&state=y").status_code == 404
    assert "google" not in client.get("/login").get_data(as_text=True).lower()


def test_provider_down_is_503_not_500(database_url, tmp_path, smtp_server):
    closed = free_port()
    app = make_app(database_url, tmp_path / "instance", GOOGLE_CLIENT_ID="cid", GOOGLE_CLIENT_SECRET="s",
                   GOOGLE_DISCOVERY_URL=f"http://127.0.0.1:{closed}/.well-known/openid-configuration",
                   GOOGLE_TIMEOUT_SECONDS=2)
    try:
        client = app.test_client()
        response = client.post("/api/v1/auth/google", json={"id_token": "a.b.c"})
        assert response.status_code == 503 and response.json["error"]["code"] == "unavailable"
        page = client.get("/auth/google/login")
        assert page.status_code == 503 and "unavailable" in page.get_data(as_text=True)
    finally:
        dispose(app)


# --- the browser flow, driven over HTTP ------------------------------------------------------------------------

def test_browser_flow_signs_in_with_cookies_and_goes_to_next(google):
    response = google.browser_flow("web@example.com", next_="/account?tab=1")
    assert response.status_code == 302 and response.headers["Location"] == "/account?tab=1"
    cookies = response.headers.getlist("Set-Cookie")
    assert any(c.startswith("access_token_cookie=") and "HttpOnly" in c for c in cookies)
    assert any(c.startswith("refresh_token=") and "HttpOnly" in c for c in cookies)
    page = google.client.get("/account")
    assert page.status_code == 200 and "web@example.com" in page.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/login", "/signup"])
def test_the_google_button_keeps_next_on_both_pages(google, path):
    page = google.client.get(f"{path}?next=/account").get_data(as_text=True)
    assert 'id="google-signin" href="/auth/google/login?next=/account"' in page


def test_browser_flow_refuses_a_foreign_next(google):
    response = google.browser_flow("next@example.com", next_="https://evil.example/steal")
    assert response.headers["Location"] == "/account"


def test_consent_denied_is_a_clear_page(google):
    response = google.browser_flow("deny@example.com", consent=False)
    assert response.status_code == 403 and "cancelled" in response.get_data(as_text=True)
    assert google.user("deny@example.com") is None


def test_a_dropped_attempt_is_refused_not_guessed(google):
    """Without its recorded intent (too many tabs dropped it), a callback must not fall back to signing in."""
    start = google.client.get("/auth/google/login")
    with google.client.session_transaction() as cookie:
        cookie.pop("google_flows")
    callback = google.provider.authorize(start.headers["Location"], "dropped@example.com")
    response = google.client.get(callback[len(google.base):])
    assert response.status_code == 400 and "Try again" in response.get_data(as_text=True)
    assert google.user("dropped@example.com") is None


@pytest.mark.sqlite_only
def test_abandoned_attempts_do_not_grow_the_cookie_past_what_browsers_keep(google):
    """Each start adds Authlib's state (url, nonce, PKCE verifier) to the signed cookie; past 4 KB a browser
    ignores the whole cookie and every later attempt fails."""
    for _ in range(30):
        response = google.client.get("/auth/google/login")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert len(cookie.split(";")[0]) < 4096
    callback = google.provider.authorize(response.headers["Location"], "tabs@example.com")
    assert google.client.get(callback[len(google.base):]).status_code == 302  # the newest attempt completes


def _tamper_authlib_state(client, **data):
    with client.session_transaction() as session:
        (key,) = [k for k in session if k.startswith("_state_google_")]
        session[key] = {**session[key], "data": {**session[key]["data"], **data}}


@pytest.mark.parametrize("tamper, status", [({"nonce": "not-the-one-sent"}, 401), ({"code_verifier": "x" * 64}, 400)])
def test_a_wrong_nonce_or_pkce_verifier_is_refused(google, tamper, status):
    start = google.client.get("/auth/google/login")
    _tamper_authlib_state(google.client, **tamper)
    callback = google.provider.authorize(start.headers["Location"], "tampered@example.com")
    assert google.client.get(callback[len(google.base):]).status_code == status
    assert google.user("tampered@example.com") is None


def test_another_browsers_callback_is_refused(google):
    """Login CSRF: an attacker's own code and state, delivered to the victim's browser."""
    start = google.app.test_client().get("/auth/google/login")
    callback = google.provider.authorize(start.headers["Location"], "attacker@example.com")
    assert google.client.get(callback[len(google.base):]).status_code == 400
    assert google.user("attacker@example.com") is None


def test_an_attempt_older_than_its_lifetime_is_refused(google):
    """Authlib records an expiry for its state but never checks it: the flow's own age decides."""
    from authsvc.blueprints.google import FLOW_SECONDS

    start = google.client.get("/auth/google/login")
    with google.client.session_transaction() as cookie:
        flows = cookie["google_flows"]
        for flow in flows.values():
            flow["at"] -= FLOW_SECONDS + 1
        cookie["google_flows"] = flows
    callback = google.provider.authorize(start.headers["Location"], "late@example.com")
    response = google.client.get(callback[len(google.base):])
    assert response.status_code == 400 and "Try again" in response.get_data(as_text=True)
    assert google.user("late@example.com") is None


def test_state_mismatch_is_a_clear_page(google):
    response = google.client.get("/auth/google/callback?code=abc&state=forged")
    assert response.status_code == 400 and "Try again" in response.get_data(as_text=True)


def test_a_replayed_code_is_refused(google):
    start = google.client.get("/auth/google/login")
    callback = google.provider.authorize(start.headers["Location"], "replay@example.com")
    assert google.client.get(callback[len(google.base):]).status_code == 302
    # The same code again, under a fresh state of this browser: the provider refuses to redeem it twice.
    code = parse_qs(urlsplit(callback).query)["code"][0]
    fresh = parse_qs(urlsplit(google.client.get("/auth/google/login").headers["Location"]).query)["state"][0]
    response = google.client.get(f"/auth/google/callback?code={code}&state={fresh}")
    assert response.status_code == 400 and "did not complete" in response.get_data(as_text=True)


def test_unverified_email_matching_an_account_tells_to_sign_in_and_link(google):
    _register(google, "taken@example.com")
    response = google.browser_flow("taken@example.com", verified=False)
    assert response.status_code == 409 and "link your Google account" in response.get_data(as_text=True)
    assert google.identities() == []


def _browser_sign_in(google, email="user@example.com"):
    page = google.client.get("/login")
    token = page.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    response = google.client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    # Signing in renews the form CSRF token: the signed-in pages carry the new one.
    account = google.client.get("/account").get_data(as_text=True)
    return account.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]


def test_link_and_unlink_from_the_account_page(google):
    _register(google, "user@example.com")
    csrf = _browser_sign_in(google)
    start = google.client.post("/auth/google/link", data={"csrf_token": csrf})
    response = google.browser_flow("someone.else@gmail.example", start=start)
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert google.identities() == [("someone.else@gmail.example", "user@example.com")]
    page = google.client.get("/account").get_data(as_text=True)
    assert "someone.else@gmail.example" in page and "Link a Google account" not in page
    # That Google account now signs in to this user.
    pair = google.exchange(google.id_token("someone.else@gmail.example")).json
    assert _claims(pair["access_token"])["email"] == "user@example.com"
    with google.app.app_context():
        identity_id = db.session.scalars(select(LinkedIdentity.id)).one()
    google.client.post(f"/account/identities/{identity_id}/unlink", data={"csrf_token": csrf})
    assert google.identities() == []


def test_link_needs_the_forms_csrf_token(google):
    _register(google)
    _browser_sign_in(google)
    assert google.client.post("/auth/google/link").status_code == 400


def test_reclaiming_an_account_removes_what_the_squatter_set_up(google):
    """The squatter's own Google link and pending email-change link go too, not only the password."""
    squatter = _register(google, "owner@example.com", verify=False)
    pair = google.client.post("/api/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD}).json
    linked = google.client.post("/api/v1/users/me/identities/google", headers=_bearer(pair),
                                json={"id_token": google.id_token("squatter@gmail.example", sub="squatter-sub")})
    assert linked.status_code == 201
    changing = google.client.patch("/api/v1/users/me", headers=_bearer(pair), json={"email": "squatter@evil.example"})
    assert changing.status_code == 200
    owner = google.exchange(google.id_token("owner@example.com"))
    assert owner.status_code == 200 and _claims(owner.json["access_token"])["sub"] == squatter["id"]
    assert google.identities() == [("owner@example.com", "owner@example.com")]
    with google.app.app_context():
        pending = db.session.scalars(select(OneTimeToken).where(
            OneTimeToken.user_id == uuid.UUID(squatter["id"]), OneTimeToken.purpose == onetime.EMAIL_CHANGE)).all()
    assert pending and all(t.used_at is not None for t in pending)
    # The squatter's Google account no longer opens the owner's account.
    theirs = google.exchange(google.id_token("squatter@gmail.example", sub="squatter-sub"))
    assert _claims(theirs.json["access_token"])["sub"] != squatter["id"]


def test_a_second_google_account_matching_by_email_is_told_to_unlink_first(google):
    _register(google, "owner@example.com")
    pair = google.client.post("/api/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD}).json
    assert google.client.post("/api/v1/users/me/identities/google", headers=_bearer(pair),
                              json={"id_token": google.id_token("first@gmail.example")}).status_code == 201
    with google.app.app_context():  # Google is now its only way in (with a password, the answer is "sign in")
        db.session.scalars(select(User).where(User.email == "owner@example.com")).one().password_hash = None
        db.session.commit()
    response = google.exchange(google.id_token("owner@example.com", sub="another-google-account"))
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    assert "unlink it first" in response.json["error"]["message"]


def test_required_verification_keeps_the_new_account_and_mails_it(oidc_provider, database_url, tmp_path,
                                                                   smtp_server):
    smtp_server.clear()
    g = _google_app(oidc_provider, database_url, tmp_path / "instance", smtp_server, REQUIRE_VERIFIED_EMAIL=True)
    try:
        response = g.exchange(g.id_token("unsure@example.com", verified=False))
        assert response.status_code == 403 and response.json["error"]["code"] == "email_not_verified"
        assert g.user("unsure@example.com") is not None  # not rolled back with the refusal
        smtp_server.wait_for(lambda m: m["To"] == "unsure@example.com")
    finally:
        dispose(g.app)


# --- linked identities through the API -------------------------------------------------------------------------

def _bearer(pair):
    return {"Authorization": f"Bearer {pair['access_token']}"}


def test_required_verification_keeps_the_new_account_on_the_page_too(oidc_provider, database_url, tmp_path,
                                                                      smtp_server):
    smtp_server.clear()
    google = _google_app(oidc_provider, database_url, tmp_path / "instance", smtp_server, REQUIRE_VERIFIED_EMAIL=True)
    try:
        response = google.browser_flow("unsure@example.com", verified=False)
        assert response.status_code == 403 and "Verify your email" in response.get_data(as_text=True)
        assert google.user("unsure@example.com") is not None
        smtp_server.wait_for(lambda m: m["To"] == "unsure@example.com")
    finally:
        dispose(google.app)


def test_identities_api_link_list_and_unlink(google):
    _register(google)
    pair = google.client.post("/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD}).json
    linked = google.client.post("/api/v1/users/me/identities/google", headers=_bearer(pair),
                                json={"id_token": google.id_token("mine@gmail.example")})
    assert linked.status_code == 201 and linked.json["provider"] == "google"
    listed = google.client.get("/api/v1/users/me/identities", headers=_bearer(pair)).json["items"]
    assert [i["email"] for i in listed] == ["mine@gmail.example"]
    gone = google.client.delete(f"/api/v1/users/me/identities/{linked.json['id']}", headers=_bearer(pair))
    assert gone.status_code == 204
    assert google.client.get("/api/v1/users/me/identities", headers=_bearer(pair)).json["items"] == []


def test_a_google_account_links_to_one_user_only(google):
    google.exchange(google.id_token("first@gmail.example"))  # creates its own user
    _register(google)
    pair = google.client.post("/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD}).json
    response = google.client.post("/api/v1/users/me/identities/google", headers=_bearer(pair),
                                  json={"id_token": google.id_token("first@gmail.example")})
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"


def test_the_last_way_to_sign_in_cannot_be_unlinked(google):
    pair = google.exchange(google.id_token("only@gmail.example")).json
    identity = google.client.get("/api/v1/users/me/identities", headers=_bearer(pair)).json["items"][0]
    response = google.client.delete(f"/api/v1/users/me/identities/{identity['id']}", headers=_bearer(pair))
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    assert len(google.identities()) == 1


@pytest.mark.parametrize("identity_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unlink_unknown_identity(google, identity_id):
    _register(google)
    pair = google.client.post("/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD}).json
    response = google.client.delete(f"/api/v1/users/me/identities/{identity_id}", headers=_bearer(pair))
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


# --- the browser flow in headless Chromium ---------------------------------------------------------------------

@pytest.fixture
def google_live(google):
    """The Google-enabled app served on its PUBLIC_BASE_URL port."""
    from .liveserver import LiveServer

    server = LiveServer(google.app, int(google.base.rsplit(":", 1)[1]))
    server.start()
    yield google
    server.stop()


@pytest.mark.sqlite_only
def test_sign_in_link_and_deny_in_a_real_browser(google_live, browser):
    from .browser import screenshot

    google, context = google_live, browser.new_context(viewport={"width": 1000, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{google.base}/login?next=/account")
        screenshot(page, "20-login-with-google")
        page.click("#google-signin")
        page.wait_for_selector("#login-form")  # the provider's sign-in page
        page.fill("#email", "chromium@example.com")
        page.fill("#name", "Chromium User")
        page.click("#login-submit")
        page.click("#consent-allow")
        page.wait_for_url(f"{google.base}/account")
        screenshot(page, "21-account-after-google")
        assert "chromium@example.com" in page.content() and "not set" in page.content()
        # The last way to sign in cannot be unlinked: the page says so and the link stays.
        page.click("#unlink-google")
        page.wait_for_load_state()
        assert "only way to sign in" in page.content()
        assert google.identities() == [("chromium@example.com", "chromium@example.com")]

        # Denying consent, in a fresh browser, lands on a clear page.
        other = browser.new_context()
        try:
            page = other.new_page()
            page.goto(f"{google.base}/signup")
            page.click("#google-signin")
            page.fill("#email", "denier@example.com")
            page.click("#login-submit")
            page.click("#consent-deny")
            page.wait_for_url(f"{google.base}/auth/google/callback*")
            screenshot(page, "22-google-denied")
            assert "cancelled" in page.content()
        finally:
            other.close()
    finally:
        context.close()


def test_no_one_unlinks_another_accounts_identity(google):
    """An identity of another account is a 404 to the caller, and stays linked."""
    owner = google.exchange(google.id_token("owner@gmail.example")).json
    theirs = google.client.get("/api/v1/users/me/identities", headers=_bearer(owner)).json["items"][0]
    _register(google)
    pair = google.client.post("/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD}).json
    response = google.client.delete(f"/api/v1/users/me/identities/{theirs['id']}", headers=_bearer(pair))
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
    assert google.identities() == [("owner@gmail.example", "owner@gmail.example")]


def test_other_accounts_identities_do_not_make_the_last_one_removable(google):
    """The last-way-to-sign-in check counts the account's own identities only."""
    google.exchange(google.id_token("other@gmail.example"))
    pair = google.exchange(google.id_token("only@gmail.example")).json
    identity = google.client.get("/api/v1/users/me/identities", headers=_bearer(pair)).json["items"][0]
    response = google.client.delete(f"/api/v1/users/me/identities/{identity['id']}", headers=_bearer(pair))
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    assert len(google.identities()) == 2


def test_linking_the_same_google_account_again_changes_nothing(google):
    """Linking the Google account already linked to the caller answers with that identity, not a conflict."""
    _register(google)
    pair = google.client.post("/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD}).json
    first, again = (google.client.post("/api/v1/users/me/identities/google", headers=_bearer(pair),
                                       json={"id_token": google.id_token("mine@gmail.example")}) for _ in range(2))
    assert first.status_code == again.status_code == 201 and again.json["id"] == first.json["id"]
    assert google.identities() == [("mine@gmail.example", "user@example.com")]
