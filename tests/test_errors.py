"""The error envelope: every failure of the JSON API is a contract error, never a 500 or a trace."""
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
