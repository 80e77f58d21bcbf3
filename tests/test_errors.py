"""The error envelope: every failure of the JSON API is a contract error, never a 500 or a trace."""
import io

import pytest

from .conftest import PASSWORD


@pytest.mark.parametrize("method, path, kwargs, status, code", [
    ("get", "/api/v1/nothing-here", {}, 404, "not_found"),
    ("delete", "/api/v1/auth/login", {}, 405, "method_not_allowed"),
    ("post", "/api/v1/auth/login", {"data": "{not json", "content_type": "application/json"}, 400, "bad_request"),
    ("post", "/api/v1/auth/login", {"data": "[1, 2]", "content_type": "application/json"}, 400, "bad_request"),
    ("post", "/api/v1/auth/login", {"data": b"\xff\xfe", "content_type": "application/json"}, 400, "bad_request"),
    ("post", "/api/v1/auth/login", {"data": "email=a", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("post", "/api/v1/auth/login", {}, 415, "unsupported_media_type"),
    ("post", "/api/v1/auth/register",
     {"data": '{"email": "' + "a" * 70000 + '"}', "content_type": "application/json"}, 413, "payload_too_large"),
])
def test_envelope(client, method, path, kwargs, status, code):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    assert isinstance(response.json["error"]["message"], str)


@pytest.mark.parametrize("path", ["/login", "/no-such-page", "/api/v1/auth/login"])
@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a..example"], ids=["label-too-long", "empty-label"])
def test_a_host_header_that_names_no_host_is_400(client, path, host):
    # No URL adapter can be made for it, so the pages' error template (url_for) raised inside the error handler.
    response = client.get(path, headers={"Host": host})
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"


@pytest.mark.settings(TRUSTED_PROXIES=1)
def test_a_forwarded_host_that_names_no_host_is_400(client):
    response = client.get("/login", headers={"X-Forwarded-Host": "a" * 64 + ".example"})
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"


def test_405_names_allowed_methods(client):
    assert "POST" in client.get("/api/v1/auth/login").headers["Allow"]


@pytest.mark.parametrize("value", ["\x00", "\ud800", "\udfff" * 3, "a" * 100000])
def test_hostile_strings_never_500(client, value):
    for path in ("/api/v1/auth/register", "/api/v1/auth/login"):
        response = client.post(path, json={"email": value, "password": value, "full_name": value})
        assert response.status_code in (413, 422), (path, response.json)


@pytest.mark.parametrize("path, body", [
    ("/api/v1/auth/register", {"email": "a@example.com", "password": "sh0rt!"}),
    ("/api/v1/auth/register", {"email": "a@example.com", "password": "a@example.com"}),
    ("/api/v1/auth/login", {"email": "a@example.com", "password": "not-the-secret-pw-9"}),
    ("/api/v1/auth/refresh", {"refresh_token": "some-secret-refresh-value"}),
    ("/api/v1/auth/register", {"email": "a@example.com", "password": 12345678901234}),
])
def test_error_bodies_never_echo_secrets(client, path, body):
    response = client.post(path, json=body)
    assert response.status_code >= 400
    for value in body.values():
        if value != "a@example.com":
            assert str(value) not in response.get_data(as_text=True)


def test_a_write_a_concurrent_one_made_impossible_is_409_conflict(app, client, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    from authsvc.services import accounts

    def taken_meanwhile(*_args, **_kwargs):
        raise IntegrityError("INSERT INTO ...", {}, Exception("duplicate key value violates unique constraint"))

    monkeypatch.setattr(accounts, "register", taken_meanwhile)
    response = client.post("/api/v1/auth/register", json={"email": "race@example.com", "password": PASSWORD})
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    assert "duplicate" not in response.get_data(as_text=True)


NESTED = ["[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000]


@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/auth/register"])
@pytest.mark.parametrize("body", NESTED, ids=["list", "object"])
def test_json_nested_deeper_than_the_parser_goes_is_400(client, path, body, caplog):
    # 10 KB, well under the size limit; the parser raises RecursionError, which get_json does not catch.
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # nor a traceback in the log per request


def test_json_nested_too_deep_for_a_signed_in_caller_is_400(client, auth):
    response = client.patch("/api/v1/users/me", data=NESTED[0], content_type="application/json",
                            headers=auth.bearer(auth.signed_in()))
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"


@pytest.mark.parametrize("path, content_type, body", [
    ("/api/v1/auth/register", "application/json", b'{"email": "' + b"a" * 70000 + b'"}'),
    ("/api/v1/auth/token", "application/x-www-form-urlencoded", b"grant_type=password&username=" + b"a" * 70000),
])
def test_a_chunked_body_over_the_limit_is_413_not_a_truncated_400(client, path, content_type, body):
    # No Content-Length: the server (gunicorn) marks the chunked body as terminated; werkzeug reads up to the limit.
    def chunked(to: str, data: bytes, mimetype: str):
        return client.post(to, input_stream=io.BytesIO(data), environ_base={"wsgi.input_terminated": True},
                           headers={"Content-Type": mimetype, "Transfer-Encoding": "chunked"})

    response = chunked(path, body, content_type)
    assert response.status_code == 413
    error = response.json["error"]  # the OAuth2 endpoint's RFC 6749 form, or the envelope
    assert (error if isinstance(error, str) else error["code"]) == "payload_too_large"
    small = b'{"email": "chunked@example.com", "password": "a fine passphrase 7"}'
    assert chunked("/api/v1/auth/register", small, "application/json").status_code == 201
