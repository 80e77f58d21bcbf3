"""Structured logs: one JSON object (or one text line) per record, each with its request id, and one access
line per request.

LOG_FORMAT=json (the production default) writes `{"time", "level", "logger", "message", "request_id", ...}`
with any `extra=` fields beside them and a failure's traceback under `exc_info`; text is for people at a
terminal. The access line is the app's own (logger `authsvc.access`), with the mail-link tokens cut out of the
path, so gunicorn's access log stays off and there is exactly one line per request.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from datetime import date, time as dt_time

from flask import Flask, g, has_request_context, request, request_finished, request_started

from .logredact import redact

ACCESS_LOGGER = "authsvc.access"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger(ACCESS_LOGGER)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request it was logged in (empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add `request_id` unless the record already carries one; always let the record through."""
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id", "") if has_request_context() else ""
        return True


# Attributes every LogRecord has; anything else on a record came from `extra=` and is written beside them.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


def _json_default(value):
    """Values json cannot write: dates and times in ISO 8601, anything else as its str()."""
    return value.isoformat() if isinstance(value, (date, dt_time)) else str(value)


_encode = json.JSONEncoder(default=_json_default, ensure_ascii=False).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id, then extras, then
    `exc_info` and `stack_info` as text.

    Written here rather than taken from python-json-logger: every request writes an access line, and that
    library's general machinery (field templates, renames, reserved-name checks per record) made the line about a
    quarter of the CPU of a gateway check.
    """

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time as ISO 8601 UTC with milliseconds and a trailing `Z`."""
        second = int(record.created)
        if second != self._second[0]:  # the date and time part changes once a second
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{self._second[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), "request_id": getattr(record, "request_id", "")}
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return _encode(line)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message` for terminals (the id only inside a request)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line without its traceback (logging.Formatter appends that)."""
        rid = getattr(record, "request_id", "")
        return f"{record.asctime} {record.levelname} {record.name}{f' [{rid}]' if rid else ''}: {record.message}"

    def usesTime(self) -> bool:
        """Always fill `record.asctime`."""
        return True


class Handler(logging.StreamHandler):
    """authsvc's handler: stderr (or `stream`), in `fmt` ("json" or "text"), with request ids."""

    def __init__(self, fmt: str = "json", stream=None):
        super().__init__(stream if stream is not None else sys.stderr)
        self.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        # On the handler, not a logger: handler filters see the records of every logger that propagates here.
        self.addFilter(RequestIdFilter())


class _DropDevServerRequestLines(logging.Filter):
    """The development server logs each request itself; the app's access line is the one we keep."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for werkzeug's per-request line (its format ends with the quoted request line, status, size)."""
        return not (isinstance(record.msg, str) and record.msg.rstrip().endswith('"%s" %s %s'))


def init_logging(app: Flask) -> None:
    """Send every record to stderr in LOG_FORMAT at LOG_LEVEL, and log one access line per request.

    Under tests (AUTHSVC_ENV=testing) no handler is installed: pytest's capture and the suite's own log scan
    see the records, access lines included.
    """
    if app.config["ENV"] != "testing":
        root = logging.getLogger()
        # Replace our own handler (a previous app in this process, or gunicorn.conf.py's), never anyone else's.
        for handler in [h for h in root.handlers if isinstance(h, Handler)]:
            root.removeHandler(handler)
        root.addHandler(Handler(app.config["LOG_FORMAT"]))
        root.setLevel(app.config["LOG_LEVEL"])
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        werkzeug = logging.getLogger("werkzeug")
        if not any(isinstance(f, _DropDevServerRequestLines) for f in werkzeug.filters):
            werkzeug.addFilter(_DropDevServerRequestLines())
    request_started.connect(_request_started, app)
    request_finished.connect(_request_finished, app)


def _request_started(_app, **_extra) -> None:
    # The signal fires before any before_request hook, so a request refused by one (429) is timed and has its
    # id too. The metrics read the same start time (`request_duration`).
    # Objects, not their context-local proxies: each attribute read through a proxy looks the context up again.
    ctx_g = g._get_current_object()
    ctx_g.request_started = time.perf_counter()
    # A caller's (or proxy's) id is kept when it is a plain token; anything else is replaced, never echoed.
    given = request.headers.get("X-Request-ID", "")
    ctx_g.request_id = given if REQUEST_ID.match(given) else new_request_id()


_ids: tuple[int, str, itertools.count] = (0, "", itertools.count())


def new_request_id() -> str:
    """A request id unique across processes: 32 hex digits, a random prefix per process and a counter.

    Ids need to be unique, not unguessable; a uuid4 per request costs a getrandom system call each.
    """
    global _ids
    pid, prefix, counter = _ids
    if pid != os.getpid():  # first use in this process, or a fork (each gunicorn worker draws its own prefix)
        pid, prefix, counter = _ids = (os.getpid(), secrets.token_hex(8), itertools.count())
    return f"{prefix}{next(counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def request_duration() -> float | None:
    """Seconds since the current request started, or None if it was never timed."""
    started = g.get("request_started")
    return None if started is None else time.perf_counter() - started


def _request_finished(_app, response, **_extra) -> None:
    duration = request_duration()
    duration_ms = round(duration * 1000, 1) if duration is not None else 0.0
    # Mail-link tokens travel in paths; the query string is left out entirely.
    if not access_log.isEnabledFor(logging.INFO):
        return
    req = request._get_current_object()  # one lookup through the context-local proxy, not eight
    path, method, status = redact(req.path), req.method, response.status_code
    # The record is made here and handed to the logger's handlers as `info()` would, minus its search of the call
    # stack for the caller's file and line: that search was an eighth of the access line's cost, and a request's
    # access line is not about a line of code.
    access_log.handle(access_log.makeRecord(
        ACCESS_LOGGER, logging.INFO, "", 0, "%s %s %s %.1fms", (method, path, status, duration_ms), None,
        extra={"method": method, "path": path, "endpoint": req.endpoint or "", "status": status,
               "duration_ms": duration_ms, "remote_addr": req.remote_addr or "", "request_id": g.get("request_id", "")},
    ))


def gunicorn_logconfig() -> dict:
    """gunicorn's `logconfig_dict`: its own messages through authsvc's handler and format (its access log is off
    through gunicorn.conf.py's logger class: the app writes the one access line per request)."""
    from pydantic import ValidationError

    from .config import Settings

    try:
        settings = Settings.from_environment()
        fmt, level = settings.log_format(), settings.LOG_LEVEL
    except ValidationError:
        fmt, level = "json", "INFO"  # the worker reports the bad setting itself, in one line, when it loads the app
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {"authsvc": {"()": "authsvc.logs.Handler", "fmt": fmt}},
        "root": {"level": level, "handlers": ["authsvc"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }
