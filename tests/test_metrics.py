"""/metrics: request counts by endpoint and status, latency, sign-ins, refresh reuse, the outbox backlog, and
totals that add up across gunicorn workers (prometheus-client's multiprocess mode)."""
from __future__ import annotations

import shutil
import socket
import time

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from .conftest import TEST_SETTINGS
from .gunicornserver import Gunicorn

OPENID = "/.well-known/openid-configuration"


def _samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of one scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return _samples(response.get_data(as_text=True))


def test_requests_counted_by_endpoint_and_status_with_latency(client):
    before = _scrape(client)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert client.get("/api/v1/no-such-thing").status_code == 404
    assert client.delete("/api/v1/auth/login").status_code == 405
    after = _scrape(client)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("authsvc_http_requests_total", endpoint="wellknown.healthz", method="GET", status="200") == 3
    assert delta("authsvc_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    assert delta("authsvc_http_requests_total", endpoint="unmatched", method="DELETE", status="405") == 1
    assert delta("authsvc_http_request_duration_seconds_count", endpoint="wellknown.healthz", method="GET") == 3
    assert delta("authsvc_http_request_duration_seconds_bucket", endpoint="wellknown.healthz", method="GET",
                 le="+Inf") == 3
    assert delta("authsvc_http_request_duration_seconds_sum", endpoint="wellknown.healthz", method="GET") > 0


def test_labels_never_carry_raw_paths_or_methods(client):
    token = "a-mail-link-token-0123456789"
    assert client.get(f"/password-reset/{token}").status_code in (200, 400)
    client.open("/healthz", method="BREW")
    text = client.get("/metrics").get_data(as_text=True)
    assert token not in text and "/password-reset/" not in text and "BREW" not in text
    assert 'endpoint="pages.reset_confirm"' in text and 'method="other"' in text


@pytest.mark.settings(REFRESH_REUSE_GRACE_SECONDS=0)
def test_logins_and_refresh_reuse(client, auth):
    before = _scrape(client)
    pair = auth.signed_in()
    assert auth.login(password="wrong password 1").status_code == 401
    assert auth.login(email="nobody@example.com").status_code == 401
    assert auth.refresh(pair["refresh_token"]).status_code == 200
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"
    after = _scrape(client)
    assert _value(after, "authsvc_logins_total", result="succeeded") - \
        _value(before, "authsvc_logins_total", result="succeeded") == 1
    assert _value(after, "authsvc_logins_total", result="failed") - \
        _value(before, "authsvc_logins_total", result="failed") == 2
    assert _value(after, "authsvc_refresh_reuse_detected_total") - \
        _value(before, "authsvc_refresh_reuse_detected_total") == 1


@pytest.mark.settings(MAIL_WORKER=False)  # nothing sends until the test flushes
def test_outbox_backlog_is_counted_at_scrape_time(app, client, auth):
    from authsvc.services import outbox

    assert _value(_scrape(client), "authsvc_mail_outbox_backlog") == 0
    auth.register("one@example.com")
    auth.register("two@example.com")
    samples = _scrape(client)
    assert _value(samples, "authsvc_mail_outbox_backlog") == 2
    assert _value(samples, "authsvc_mail_outbox_oldest_unsent_seconds") >= 0
    with app.app_context():
        assert outbox.flush() == (2, 0)
    samples = _scrape(client)
    assert _value(samples, "authsvc_mail_outbox_backlog") == 0
    assert _value(samples, "authsvc_mail_outbox_oldest_unsent_seconds") == 0


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2/minute", RATELIMIT_PROFILE_READ="2/minute")
def test_metrics_is_never_rate_limited(client):
    assert [client.get("/metrics").status_code for _ in range(5)] == [200] * 5
    # The limits are on: the same number of requests to a limited endpoint is refused.
    assert 429 in [client.get("/api/v1/users/me").status_code for _ in range(5)]


@pytest.mark.settings(METRICS_TOKEN="metrics-scrape-token-42")
def test_metrics_token_when_set(client):
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic metrics-scrape-token-42"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/metrics", headers={"Authorization": "Bearer metrics-scrape-token-42"})
    assert response.status_code == 200 and b"authsvc_http_requests_total" in response.data


@pytest.mark.settings(METRICS_ENABLED=False)
def test_metrics_can_be_turned_off(client):
    assert client.get("/metrics").status_code == 404


def _accept_backlog(port: int) -> int:
    """Connections waiting in the listening socket's accept queue (Linux: rx_queue of the LISTEN entry)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def _wait_accepted(port: int) -> None:
    deadline = time.monotonic() + 10
    while _accept_backlog(port) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _accept_backlog(port) == 0


def _openid_counts_per_worker(folder) -> dict[str, float]:
    counts = {}
    for path in folder.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "authsvc_http_requests_total" and \
                        sample.labels.get("endpoint") == "wellknown.openid_configuration":
                    counts[path.stem] = counts.get(path.stem, 0) + sample.value
    return counts


def test_counts_add_up_across_gunicorn_workers(sqlite_template, tmp_path):
    """Two sync workers each serve part of the requests; one scrape, served by either, shows the sum."""
    database = tmp_path / "metrics.db"
    shutil.copyfile(sqlite_template, database)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    # A file left by an earlier run: gunicorn.conf.py must clear it, or its 1000 would join the totals.
    stale = MmapedDict(str(metrics_dir / "counter_999999.db"))
    stale.write_value(mmap_key("authsvc_http_requests", "authsvc_http_requests_total",
                               ["endpoint", "method", "status"], ["wellknown.openid_configuration", "GET", "200"],
                               "stale"), 1000.0, 0.0)
    stale.close()
    server = Gunicorn({"AUTHSVC_ENV": "production", "SECRET_KEY": TEST_SETTINGS["SECRET_KEY"],
                       "DATABASE_URL": f"sqlite:///{database}", "INSTANCE_PATH": str(tmp_path / "instance"),
                       "MAIL_WORKER": "false", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, workers=2)
    server.start()
    held = []
    try:
        # A sync worker serves one connection at a time: a connection that sends nothing holds one worker, so
        # every other request goes to the other. Hold one, send 3; hold the second worker, free the first, send 2.
        held.append(socket.create_connection(("127.0.0.1", server.port)))
        _wait_accepted(server.port)
        for _ in range(3):
            assert requests.get(server.url + OPENID, timeout=10).status_code == 200
        held.append(socket.create_connection(("127.0.0.1", server.port)))
        _wait_accepted(server.port)  # taken by the only free worker
        held.pop(0).close()
        for _ in range(2):
            assert requests.get(server.url + OPENID, timeout=10).status_code == 200
        held.pop().close()

        assert sorted(_openid_counts_per_worker(metrics_dir).values()) == [2, 3]
        scrape = requests.get(server.url + "/metrics", timeout=10)
        assert scrape.status_code == 200
        samples = _samples(scrape.text)
        assert _value(samples, "authsvc_http_requests_total", endpoint="wellknown.openid_configuration",
                      method="GET", status="200") == 5
        assert _value(samples, "authsvc_http_request_duration_seconds_count",
                      endpoint="wellknown.openid_configuration", method="GET") == 5
        assert _value(samples, "authsvc_mail_outbox_backlog") == 0
    finally:
        for sock in held:
            sock.close()
        server.stop()
    assert not (metrics_dir / "counter_999999.db").exists()
