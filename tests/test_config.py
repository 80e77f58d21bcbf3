"""Settings: defaults, parsing, and failing fast with one clear line on a bad value."""
import multiprocessing
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from authsvc.config import ConfigError, load

ROOT = Path(__file__).resolve().parent.parent


PRODUCTION = {"AUTHSVC_ENV": "production", "SECRET_KEY": "s" * 40, "DATABASE_URL": "postgresql://u@db/auth",
              "PUBLIC_BASE_URL": "https://auth.example.com"}


def _load(tmp_path, **settings):
    return load({"INSTANCE_PATH": str(tmp_path), **settings})


def test_defaults(tmp_path):
    cfg = _load(tmp_path)
    assert cfg["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'authsvc.db'}"
    assert cfg["JWT_ALGORITHM"] == "RS256" and cfg["JWT_DECODE_ALGORITHMS"] == ["RS256"]
    assert cfg["ACCESS_TOKEN_EXPIRE_MINUTES"] == 30 and cfg["REFRESH_TOKEN_EXPIRE_DAYS"] == 7
    assert cfg["TIERS"] == ["free", "premium"] and cfg["TRUSTED_PROXIES"] == 0


@pytest.mark.parametrize("url", ["postgres://u:p@db:5432/auth", "postgresql://u:p@db:5432/auth"])
def test_postgres_urls_use_psycopg(tmp_path, url):
    assert _load(tmp_path, DATABASE_URL=url)["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@db:5432/auth"


@pytest.mark.parametrize("settings", [
    {"DATABASE_URL": "not a url"},
    {"DATABASE_URL": "mysql://u@h/db"},
    {"AUTHSVC_ENV": "production"},
    {"AUTHSVC_ENV": "production", "SECRET_KEY": "short"},
    {"AUTHSVC_ENV": "staging"},
    {"JWT_ALGORITHM": "HS256"},
    {"GOOGLE_CLIENT_ID": "abc", "GOOGLE_DISCOVERY_URL": "file:///etc/passwd"},
    {"GOOGLE_TIMEOUT_SECONDS": "0"},
    {"JWT_PRIVATE_KEY_FILE": "/nonexistent/key.pem"},
    {"REQUIRE_VERIFIED_EMAIL": "maybe"},
    {"ACCESS_TOKEN_EXPIRE_MINUTES": "soon"},
    {"ACCESS_TOKEN_EXPIRE_MINUTES": "0"},
    {"TIERS": ""},
    {"INTROSPECTION_SCOPE": "two scopes"},
    {"EMAIL_CHANGE_SIGNIN_MAX_AGE_MINUTES": "0"},
    {"AUTHSVC_ENV": "production", "SECRET_KEY": "s" * 40, "SECRET_KEY_FALLBACKS": "too short"},
    {"IPV6_SOURCE_PREFIX": "129"},
    # Flask-Limiter reads a limit only when a request meets it, and skips one it cannot read: a typo was no limit.
    {"RATELIMIT_LOGIN": "5 per minut"},
    {"RATELIMIT_LOGIN": "5/minute;"},
    {"RATELIMIT_DEFAULT": "banana"},
    {"RATELIMIT_MAIL_PER_ADDRESS": ""},
    # Flask-CORS reads regex characters as a pattern matched at the start: *.example.com allowed xexample.com.evil.
    {"CORS_ORIGINS": "https://*.example.com"},
    {"CORS_ORIGINS": "https://app.example.com/"},
    {"CORS_ORIGINS": "app.example.com"},
    {"CORS_ORIGINS": "null"},
    {"PASSWORD_MIN_LENGTH": "300", "PASSWORD_MAX_LENGTH": "256"},
    {"IPV6_SOURCE_PREFIX": "16"},
    {"MAIL_USE_TLS": "true", "MAIL_USE_SSL": "true"},
    {"REGISTER_TIERS": "platinum"},   # not a tier
    {"REGISTER_TIERS": "premium"},    # every account made without a choice gets the first tier, free
    # Mailed links are built on it.
    {"PUBLIC_BASE_URL": "auth.example.com"},
    {"PUBLIC_BASE_URL": "ftp://auth.example.com"},
    {"PUBLIC_BASE_URL": "https://"},
    {"PUBLIC_BASE_URL": "https://auth.example.com:99999"},
    {"PUBLIC_BASE_URL": "https://auth.example.com/?next=x"},
    {"PUBLIC_BASE_URL": "https://user:pw@auth.example.com"},
    {"PUBLIC_BASE_URL": "https://[::1"},
    # Production refuses the development conveniences: the instance's own SQLite file, http links, http cookies.
    {**PRODUCTION, "DATABASE_URL": ""},
    {key: value for key, value in PRODUCTION.items() if key != "PUBLIC_BASE_URL"},   # the development address
    {**PRODUCTION, "PUBLIC_BASE_URL": "http://auth.example.com"},
    {**PRODUCTION, "PUBLIC_BASE_URL": "http://10.0.0.5:8000"},
    {**PRODUCTION, "COOKIE_SECURE": "false"},
])
def test_bad_settings_fail_fast(tmp_path, settings):
    with pytest.raises(ConfigError):
        _load(tmp_path, **settings)


@pytest.mark.parametrize("settings", [
    {},
    {"PUBLIC_BASE_URL": "https://example.com/auth"},   # behind a proxy that mounts it under a path
    # Trying the production set-up on one machine: http (and cookies without Secure) on loopback only.
    {"PUBLIC_BASE_URL": "http://127.0.0.1:8000", "COOKIE_SECURE": "false"},
    {"PUBLIC_BASE_URL": "http://localhost:8000"},
    {"PUBLIC_BASE_URL": "http://[::1]:8000", "COOKIE_SECURE": "false"},
    {"DATABASE_URL": "sqlite:////var/lib/authsvc/authsvc.db"},   # SQLite, when chosen, not by default
])
def test_production_settings_that_load(tmp_path, settings):
    assert _load(tmp_path, **{**PRODUCTION, **settings})["ENV"] == "production"


@pytest.mark.parametrize("raw, value", [("true", True), ("1", True), ("yes", True),
                                        ("false", False), ("0", False), ("no", False)])
def test_booleans(tmp_path, raw, value):
    assert _load(tmp_path, REQUIRE_VERIFIED_EMAIL=raw)["REQUIRE_VERIFIED_EMAIL"] is value


def test_comma_lists(tmp_path):
    cfg = _load(tmp_path, TIERS=" gold, silver ,", CORS_ORIGINS="https://a.example,https://b.example")
    assert cfg["TIERS"] == ["gold", "silver"]
    assert cfg["CORS_ORIGINS"] == ["https://a.example", "https://b.example"]


def test_development_secret_generated_once(tmp_path):
    first = _load(tmp_path)["SECRET_KEY"]
    assert len(first) >= 32 and (tmp_path / "secret_key").read_text().strip() == first
    assert _load(tmp_path)["SECRET_KEY"] == first


def test_environment_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCESS_TOKEN_EXPIRE_MINUTES", "12")
    monkeypatch.setenv("TIERS", "a,b")
    cfg = _load(tmp_path)
    assert cfg["ACCESS_TOKEN_EXPIRE_MINUTES"] == 12 and cfg["TIERS"] == ["a", "b"]


def test_dotenv_file_is_read_below_the_environment_and_given_settings(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("# local settings\nACCESS_TOKEN_EXPIRE_MINUTES=12\nTIERS=a, b\n"
                                   "REFRESH_TOKEN_EXPIRE_DAYS=3\nLOG_LEVEL=WARNING\nNOT_A_SETTING=1\nLONE_NAME\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFRESH_TOKEN_EXPIRE_DAYS", "4")
    monkeypatch.delenv("ACCESS_TOKEN_EXPIRE_MINUTES", raising=False)
    cfg = _load(tmp_path, LOG_LEVEL="ERROR")
    assert (cfg["ACCESS_TOKEN_EXPIRE_MINUTES"], cfg["TIERS"]) == (12, ["a", "b"])
    assert (cfg["REFRESH_TOKEN_EXPIRE_DAYS"], cfg["LOG_LEVEL"]) == (4, "ERROR")


def test_a_bad_value_in_the_dotenv_file_fails_fast(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DB_POOL_SIZE=many\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DB_POOL_SIZE", raising=False)
    with pytest.raises(ConfigError, match="DB_POOL_SIZE"):
        _load(tmp_path)


def _run(tmp_path, args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL", "AUTHSVC_ENV")}
    base.update(INSTANCE_PATH=str(tmp_path), **env)
    return subprocess.run(args, cwd=tmp_path, env=base, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env, word", [
    ({"AUTHSVC_ENV": "production"}, "SECRET_KEY"),
    ({"DATABASE_URL": "://nope"}, "DATABASE_URL"),
    ({"JWT_PRIVATE_KEY_FILE": "/nonexistent.pem"}, "JWT_PRIVATE_KEY_FILE"),
])
@pytest.mark.parametrize("command", ["cli", "wsgi"])
def test_bad_setting_stops_the_process_with_one_line(tmp_path, env, word, command):
    args = ([str(Path(sys.executable).parent / "authsvc"), "db", "current"] if command == "cli"
            else [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import wsgi"])
    result = _run(tmp_path, args, **env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and word in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_env_example_names_every_setting_and_its_defaults_load(tmp_path):
    from authsvc.config import Settings
    text = (ROOT / ".env.example").read_text()
    named = dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$", text, re.M))
    assert set(Settings.model_fields) - set(named) == set()
    assert set(named) - set(Settings.model_fields) == set()
    uncommented = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", text, re.M))
    _load(tmp_path, **uncommented)  # the example itself is a valid configuration


def _load_secret(folder_and_barrier):
    folder, barrier = folder_and_barrier
    barrier.wait()
    return load({"INSTANCE_PATH": folder})["SECRET_KEY"]


def test_processes_starting_at_once_share_one_generated_secret(tmp_path):
    """gunicorn without preload, or `authsvc db upgrade` beside the server: each process generated and wrote its
    own secret, and one could read the file between another's truncate and write, and run with SECRET_KEY ''."""
    context = multiprocessing.get_context("spawn")
    for attempt in range(4):
        folder = str(tmp_path / f"instance{attempt}")
        with context.Manager() as manager:
            barrier = manager.Barrier(6)
            with context.Pool(6) as pool:
                secrets = pool.map(_load_secret, [(folder, barrier)] * 6)
        assert all(len(s) >= 32 for s in secrets), [len(s) for s in secrets]
        assert len(set(secrets)) == 1


def test_the_generated_secret_is_never_readable_by_others(tmp_path, monkeypatch):
    """The file was written with the process umask (0644) and only then chmod-ed: another local user could read
    the secret in between. Created 0600 from the start, it needs no chmod at all."""
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    old = os.umask(0o022)
    try:
        load({"INSTANCE_PATH": str(tmp_path / "instance")})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "instance" / "secret_key").stat().st_mode) == 0o600
