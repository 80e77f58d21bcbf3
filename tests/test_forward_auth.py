"""GET /api/v1/auth/verify for gateways, directly and behind a real nginx with auth_request."""
import json
import urllib.error
import urllib.request

import pytest
from sqlalchemy import select

from authsvc.extensions import db
from authsvc.models import User

from .conftest import PASSWORD
from .test_pages import sign_in_page

VERIFY = "/api/v1/auth/verify"


def test_valid_token_gets_identity_headers(auth, client):
    pair = auth.signed_in()
    response = client.get(VERIFY, headers=auth.bearer(pair))
    assert response.status_code == 200
    me = client.get("/api/v1/users/me", headers=auth.bearer(pair)).json
    assert response.headers["X-User-Id"] == me["id"]
    assert response.headers["X-User-Email"] == "user@example.com" and response.headers["X-User-Roles"] == ""


def test_forward_auth_says_whether_the_address_is_proven(app, auth, client):
    # Anyone may register any address: an app behind the gateway must be able to tell a proven one.
    unproven = auth.signed_in("ceo@victim.example")
    assert client.get(VERIFY, headers=auth.bearer(unproven)).headers["X-User-Email-Verified"] == "false"
    with app.app_context():
        db.session.scalars(select(User).where(User.email == "ceo@victim.example")).one().email_verified = True
        db.session.commit()
    proven = auth.login("ceo@victim.example").json
    assert client.get(VERIFY, headers=auth.bearer(proven)).headers["X-User-Email-Verified"] == "true"


def test_a_client_sent_forwarded_method_cannot_mask_the_gateways_original_method(auth, client):
    # nginx's auth_request passes every header of the original request on, the client's own among them.
    auth.register()
    sign_in_page(client)
    response = client.get(VERIFY, headers={"X-Original-Method": "POST", "X-Forwarded-Method": "GET"})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}])
def test_missing_or_bad_token_is_401(client, headers):
    response = client.get(VERIFY, headers=headers)
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"


def test_revoked_token_is_401_at_once(auth, client):
    pair = auth.signed_in()
    client.post("/api/v1/auth/logout", headers=auth.bearer(pair))
    assert client.get(VERIFY, headers=auth.bearer(pair)).status_code == 401


def test_role_requirement(auth, client, admin):
    pair = auth.signed_in()
    assert client.get(f"{VERIFY}?role=admin", headers=auth.bearer(pair)).status_code == 403
    response = client.get(f"{VERIFY}?role=admin", headers=admin)
    assert response.status_code == 200 and response.headers["X-User-Roles"] == "admin"


def test_cookie_and_csrf_for_unsafe_original_methods(auth, client):
    auth.register()
    sign_in_page(client)
    assert client.get(VERIFY).status_code == 200
    assert client.get(VERIFY, headers={"X-Original-Method": "POST"}).status_code == 403
    csrf = client.get_cookie("csrf_access_token").value
    assert client.get(VERIFY, headers={"X-Forwarded-Method": "POST", "X-CSRF-Token": csrf}).status_code == 200


@pytest.mark.parametrize("value", ["é", "\u00ff" * 40, "ascii-but-wrong"])
def test_a_bad_csrf_header_with_the_cookie_is_403_never_500(auth, client, value):
    auth.register()
    sign_in_page(client)
    refused = client.get(VERIFY, headers={"X-Forwarded-Method": "POST", "X-CSRF-Token": value})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    logout = client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": value})
    assert logout.status_code == 403 and logout.json["error"]["code"] == "forbidden"
    assert client.get(VERIFY).status_code == 200  # still signed in


@pytest.fixture
def gateway(live_server):
    """nginx on 127.0.0.1 with deploy/nginx-auth-request.conf, asking the live authsvc."""
    from .nginxserver import NginxGateway

    nginx = NginxGateway(live_server.url)
    nginx.start()
    yield nginx
    nginx.stop()


def _get(url, token=None, headers=None):
    request = urllib.request.Request(url, headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                                   **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


def _api(base, path, body, token=None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.mark.sqlite_only
def test_nginx_auth_request(live_server, gateway):
    base = live_server.url
    _api(base, "/api/v1/auth/register", {"email": "gw@example.com", "password": PASSWORD})
    pair = _api(base, "/api/v1/auth/login", {"email": "gw@example.com", "password": PASSWORD})
    status, echoed = _get(gateway.url + "/orders", pair["access_token"])
    assert status == 200 and echoed["X-User-Email"] == "gw@example.com" and echoed["X-User-Id"]
    assert echoed["X-User-Email-Verified"] == "false"
    assert _get(gateway.url + "/orders")[0] == 401
    assert _get(gateway.url + "/orders", "not-a-token")[0] == 401
    assert _get(gateway.url + "/admin/panel", pair["access_token"])[0] == 403
    _api(base, "/api/v1/auth/logout", {}, pair["access_token"])
    assert _get(gateway.url + "/orders", pair["access_token"])[0] == 401


@pytest.mark.sqlite_only
def test_nginx_admin_location_sets_every_user_header(live_server, gateway, admin):
    # The app behind the gateway trusts X-User-*: a header the gateway does not set reaches it as the client sent it.
    forged = {"X-User-Email": "ceo@example.com", "X-User-Roles": "admin", "X-User-Email-Verified": "false"}
    # `admin` made the account in the shared database; the live server issues its own token (its own issuer).
    token = _api(live_server.url, "/api/v1/auth/login", {"email": "admin@example.com", "password": PASSWORD})
    status, echoed = _get(gateway.url + "/admin/panel", token["access_token"], forged)
    assert status == 200 and echoed["X-User-Id"]
    assert echoed["X-User-Email"] == "admin@example.com" and echoed["X-User-Roles"] == "admin"
    assert echoed["X-User-Email-Verified"] == "true"  # create-admin promotes verified addresses only
    assert _get(gateway.url + "/orders", token["access_token"], forged)[1]["X-User-Email"] == "admin@example.com"


@pytest.mark.parametrize("stored, header", [
    ("plain@example.com", "plain@example.com"),
    ("ωmega@example.com", "%CF%89mega@example.com"),  # an address stored before addresses had to be ASCII
    ("user@bücher.de", "user@xn--bcher-kva.de"),
])
def test_the_email_header_is_always_ascii(stored, header):
    from authsvc.blueprints.api.gateway import _header_address

    assert _header_address(stored) == header
