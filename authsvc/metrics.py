"""Prometheus metrics at /metrics: requests by endpoint and status with their latency, sign-ins, refresh-token
reuse, and the mail outbox backlog.

Under gunicorn every worker is a process of its own. With PROMETHEUS_MULTIPROC_DIR in the environment,
prometheus-client writes each worker's values to files in that folder and a scrape adds them up
(multiprocess mode; gunicorn.conf.py empties the folder at start and marks exited workers dead). The library
reads that variable itself, when it is imported, which is why it is an environment variable of the process and
not a setting in authsvc/config.py (a .env file would be read too late). Without it (tests, the development
server) the values live in this process. The outbox backlog is nobody's counter: a query answers it when
scraped, in the one worker that serves the scrape.
"""
from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, request, request_finished
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from . import signals
from .errors import APIError
from .extensions import db, limiter
from .logs import request_duration
from .models import utcnow
from .services import outbox

log = logging.getLogger(__name__)

# prometheus-client picked its value store at import: shared files (multiprocess) or this process's memory.
MULTIPROCESS = values.ValueClass is not values.MutexValue

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("authsvc_http_requests", "HTTP requests by Flask endpoint, method and status.",
                   ["endpoint", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("authsvc_http_request_duration_seconds", "Time to answer an HTTP request, by Flask endpoint.",
                    ["endpoint", "method"], registry=REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LOGINS = Counter("authsvc_logins", "Password sign-ins (API and pages) by result: succeeded or failed.",
                 ["result"], registry=REGISTRY)
REFRESH_REUSE = Counter("authsvc_refresh_reuse_detected",
                        "Already-rotated refresh tokens presented again (each revokes its session).",
                        registry=REGISTRY)
for _result in ("succeeded", "failed"):
    LOGINS.labels(_result)  # present (at 0) from the start, so rate() and alerts see the series at once

# Labels are never raw paths or arbitrary methods: a client must not be able to mint new time series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # no route matched (404, or 405 before routing)


@signals.login_succeeded.connect
def _login_succeeded(_sender, **_kwargs) -> None:
    LOGINS.labels("succeeded").inc()


@signals.login_failed.connect
def _login_failed(_sender, **_kwargs) -> None:
    LOGINS.labels("failed").inc()


@signals.refresh_reused.connect
def _refresh_reused(_sender, **_kwargs) -> None:
    REFRESH_REUSE.inc()


class OutboxCollector:
    """The outbox backlog and the age of its oldest message, queried at scrape time."""

    def collect(self):
        """Yield the two gauges; on a database failure yield nothing (alert on their absence)."""
        try:
            waiting, oldest = outbox.backlog()
        except SQLAlchemyError:
            db.session.rollback()
            log.warning("metrics: the mail outbox could not be counted", exc_info=True)
            return
        yield GaugeMetricFamily("authsvc_mail_outbox_backlog", "Messages in the mail outbox not sent yet.",
                                value=waiting)
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily("authsvc_mail_outbox_oldest_unsent_seconds",
                                "Age of the oldest message not sent yet (0 when none waits).", value=max(age, 0.0))


class _Scrape:
    """What one scrape exposes: the request and auth metrics (of every worker) and the outbox gauges."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        """Every metric family of every collector."""
        for collector in self.collectors:
            yield from collector.collect()


def _authorized(token: str) -> bool:
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


# Scraped by machines on a schedule from one address: never rate-limited.
@limiter.exempt
def metrics():
    """The metrics in Prometheus text format (OpenMetrics when the scraper asks for it)."""
    token = current_app.config["METRICS_TOKEN"]
    if token and not _authorized(token):
        raise APIError(401, "unauthorized", "A valid metrics token is required.",
                       headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    # A fresh collector per scrape in multiprocess mode: it reads the files of every worker, live and exited.
    values_source = MultiProcessCollector(None) if MULTIPROCESS else REGISTRY
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = current_app.response_class(encoder(_Scrape(values_source, OutboxCollector())),
                                          content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_metrics(app: Flask) -> None:
    """Serve /metrics and measure every request, unless METRICS_ENABLED is off."""
    if not app.config["METRICS_ENABLED"]:
        return
    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    request_finished.connect(_request_finished, app)


# The labelled series, looked up once each (`labels()` validates and locks on every call); bounded by the routes,
# METHODS and the status codes the app answers with.
_series: dict = {}


def _request_finished(_app, response, **_extra) -> None:
    duration = request_duration()  # timed from request_started, before any hook: 429s are measured too
    req = request._get_current_object()  # one context lookup, not three
    method = req.method if req.method in METHODS else "other"
    key = (req.endpoint or UNMATCHED, method, response.status_code)
    series = _series.get(key)
    if series is None:
        series = _series[key] = (REQUESTS.labels(key[0], method, str(key[2])), LATENCY.labels(key[0], method))
    series[0].inc()
    if duration is not None:
        series[1].observe(duration)
