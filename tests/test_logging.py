"""Structured logs: JSON lines with the request id, one access line per request with mail-link tokens cut out,
and an unexpected error's cause in the log while the client gets only the code and the request id."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from authsvc import logs
from authsvc.config import ConfigError, load

from .conftest import TEST_SETTINGS, dispose, make_app, remember
from .gunicornserver import Gunicorn

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def log_lines():
    """The records logged during the test, as authsvc's JSON handler writes them, parsed line by line."""
    stream = io.StringIO()
    handler = logs.Handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        # json.loads fails the test on any line that is not one JSON object.
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def _access(lines) -> list[dict]:
    return [line for line in lines if line["logger"] == "authsvc.access"]


def test_one_json_access_line_per_request_with_its_request_id(client, log_lines):
    made = client.get("/healthz")
    given = client.get("/api/v1/no-such-thing", headers={"X-Request-ID": "trace-abc.123"})
    first, second = _access(log_lines())
    assert first["request_id"] == made.headers["X-Request-ID"] and len(first["request_id"]) == 32
    assert second["request_id"] == given.headers["X-Request-ID"] == "trace-abc.123"
    assert ISO_UTC.match(first["time"]) and first["level"] == "INFO"
    assert (first["method"], first["path"], first["status"], first["endpoint"]) == \
        ("GET", "/healthz", 200, "wellknown.healthz")
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert first["remote_addr"] == "127.0.0.1"
    assert first["message"].startswith("GET /healthz 200 ")
    assert (second["path"], second["status"]) == ("/api/v1/no-such-thing", 404)


def test_made_request_ids_are_distinct_and_each_process_draws_its_own():
    ids = [logs.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # a forked worker: its ids must not repeat the parent's sequence
        os.write(writer, logs.new_request_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(reader, 64).decode()
    os.close(reader), os.close(writer)
    assert from_child[:16] != ids[0][:16] and from_child not in ids


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="1/minute")
def test_a_request_refused_before_the_view_keeps_its_request_id(client, log_lines):
    """The default limit's 429 is decided in a before-request hook; its answer and access line still carry the id."""
    client.get("/docs")
    refused = client.get("/docs", headers={"X-Request-ID": "trace-429"})
    assert refused.status_code == 429 and refused.headers["X-Request-ID"] == "trace-429"
    assert _access(log_lines())[-1]["request_id"] == "trace-429"


def test_access_lines_cut_mail_link_tokens_out_of_paths(client, log_lines):
    token = "mail-link-token-Zm9vYmFy-0123456789"
    remember(token)  # the suite's final log scan looks for it too
    for path in (f"/password-reset/{token}", f"/verify-email/{token}", f"/signup/complete/{token}?next=/x",
                 f"/confirm-email-change/{token}"):
        client.get(path)
    lines = log_lines()
    assert token not in json.dumps(lines)
    assert [line["path"] for line in _access(lines)] == [
        "/password-reset/[redacted]", "/verify-email/[redacted]", "/signup/complete/[redacted]",
        "/confirm-email-change/[redacted]"]


def test_unexpected_error_logs_its_cause_and_the_client_gets_code_and_request_id(app, client, monkeypatch,
                                                                                 log_lines):
    from authsvc.services import accounts

    def boom(*_args, **_kwargs):
        raise RuntimeError("internal cause: the frobnicator melted")

    monkeypatch.setattr(accounts, "authenticate", boom)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.post("/api/v1/auth/login", json={"email": "a@example.com", "password": "whatever 123"})
    assert response.status_code == 500
    assert response.json == {"error": {"code": "internal_error", "message": "An internal error occurred."}}
    assert b"frobnicator" not in response.data and b"Traceback" not in response.data
    request_id = response.headers["X-Request-ID"]
    assert request_id

    lines = log_lines()
    [error] = [line for line in lines if line["level"] == "ERROR"]
    assert error["logger"] == "authsvc.errors" and error["request_id"] == request_id
    assert "POST /api/v1/auth/login" in error["message"]
    assert "RuntimeError: internal cause: the frobnicator melted" in error["exc_info"]
    [access] = _access(lines)
    assert (access["status"], access["request_id"]) == (500, request_id)


def test_text_format_for_terminals(client):
    stream = io.StringIO()
    handler = logs.Handler("text", stream)
    logging.getLogger().addHandler(handler)
    try:
        client.get("/healthz", headers={"X-Request-ID": "rid-text-1"})
        logging.getLogger("authsvc.test").info("outside any request")
    finally:
        logging.getLogger().removeHandler(handler)
    inside, outside = stream.getvalue().splitlines()
    assert " INFO authsvc.access [rid-text-1]: GET /healthz 200 " in inside
    assert outside.endswith(" INFO authsvc.test: outside any request")


def test_json_lines_write_any_extra_and_the_traceback(log_lines):
    import uuid
    from datetime import datetime, timezone

    moment, ident = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), uuid.uuid4()
    log = logging.getLogger("authsvc.test")
    log.warning("outside %s", "any request", extra={"when": moment, "user_id": ident, "count": 3, "note": "é"})
    try:
        raise ValueError("the cause")
    except ValueError:
        log.exception("it failed", stack_info=True)
    plain, failed = log_lines()
    assert (plain["message"], plain["level"], plain["request_id"]) == ("outside any request", "WARNING", "")
    assert (plain["when"], plain["user_id"], plain["count"], plain["note"]) == \
        ("2026-01-02T03:04:05+00:00", str(ident), 3, "é")
    assert list(plain)[:5] == ["time", "level", "logger", "message", "request_id"] and ISO_UTC.match(plain["time"])
    assert "ValueError: the cause" in failed["exc_info"] and "Stack (most recent call last)" in failed["stack_info"]
    assert "exc_info" not in plain and "stack_info" not in plain


@pytest.mark.parametrize("settings, expected", [
    ({"AUTHSVC_ENV": "production"}, "json"),
    ({"AUTHSVC_ENV": "development"}, "text"),
    ({"AUTHSVC_ENV": "production", "LOG_FORMAT": "text"}, "text"),
    ({"AUTHSVC_ENV": "development", "LOG_FORMAT": "json"}, "json"),
])
def test_log_format_follows_the_environment_unless_set(tmp_path, settings, expected):
    cfg = load({"INSTANCE_PATH": str(tmp_path), "SECRET_KEY": TEST_SETTINGS["SECRET_KEY"],
                "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "PUBLIC_BASE_URL": "https://auth.example.com",
                **settings})
    assert cfg["LOG_FORMAT"] == expected


@pytest.mark.parametrize("settings", [{"LOG_FORMAT": "xml"}, {"LOG_LEVEL": "LOUD"}])
def test_bad_log_settings_fail_fast(tmp_path, settings):
    with pytest.raises(ConfigError):
        load({"INSTANCE_PATH": str(tmp_path), **settings})


def test_apps_outside_tests_install_exactly_one_handler(tmp_path):
    root = logging.getLogger()
    apps = []
    try:
        for name in ("a", "b"):
            apps.append(make_app(f"sqlite:///{tmp_path / name}.db", tmp_path / name, AUTHSVC_ENV="development"))
        ours = [h for h in root.handlers if isinstance(h, logs.Handler)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.TextFormatter)
    finally:
        for handler in [h for h in root.handlers if isinstance(h, logs.Handler)]:
            root.removeHandler(handler)
        root.setLevel(logging.INFO)
        werkzeug = logging.getLogger("werkzeug")
        for dropper in [f for f in werkzeug.filters if isinstance(f, logs._DropDevServerRequestLines)]:
            werkzeug.removeFilter(dropper)
        for application in apps:
            dispose(application)


def test_gunicorn_writes_only_json_lines_and_one_access_line_per_request(sqlite_template, tmp_path):
    database = tmp_path / "logs.db"
    shutil.copyfile(sqlite_template, database)
    server = Gunicorn({"AUTHSVC_ENV": "production", "SECRET_KEY": TEST_SETTINGS["SECRET_KEY"],
                       "DATABASE_URL": f"sqlite:///{database}", "INSTANCE_PATH": str(tmp_path / "instance"),
                       "MAIL_WORKER": "false", "LOG_FORMAT": "json"}, workers=1)
    server.start()
    try:
        ids = ["req-one", "req-two", "req-three"]
        for request_id, path in zip(ids, ("/healthz", "/.well-known/jwks.json", "/nothing-here")):
            response = requests.get(server.url + path, headers={"X-Request-ID": request_id}, timeout=10)
            assert response.headers["X-Request-ID"] == request_id
        # Each access line is written before its response leaves the worker; stderr is line-buffered.
        output = Path(server.log.name).read_text()
    finally:
        server.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # gunicorn's own lines are JSON too
    assert not [line for line in lines if line["logger"] == "gunicorn.access"]  # the app's line is the one
    access = [line for line in _access(lines) if line["request_id"] in ids]
    assert sorted(line["request_id"] for line in access) == sorted(ids)
    assert [line["status"] for line in access] == [200, 200, 404]


def test_the_development_servers_own_request_lines_are_dropped(live_server):
    """`authsvc run` keeps werkzeug's start-up lines but not its per-request line (ours is the one)."""
    werkzeug = logging.getLogger("werkzeug")
    seen = []
    catcher = logging.Handler()
    catcher.emit = lambda record: seen.append(record.getMessage())
    werkzeug.addHandler(catcher)
    drop = logs._DropDevServerRequestLines()
    try:
        requests.get(live_server.url + "/healthz", timeout=10)
        assert any("GET /healthz" in line for line in seen)  # werkzeug does log it by itself
        seen.clear()
        werkzeug.addFilter(drop)
        requests.get(live_server.url + "/healthz", timeout=10)
        assert not any("GET /healthz" in line for line in seen)
    finally:
        werkzeug.removeFilter(drop)
        werkzeug.removeHandler(catcher)
