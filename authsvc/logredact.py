"""Keep secrets out of logs: one-time tokens travel in mail-link paths, which access logs would print."""
from __future__ import annotations

import logging
import re

TOKEN_PATH = re.compile(r"(/(?:verify-email|confirm-email-change|password-reset|signup/complete)/)[^\s/?\"']+")
ACCESS_LOGGERS = ("werkzeug", "gunicorn.access")


def redact(text: str) -> str:
    """`text` with the token of every mail-link path replaced."""
    return TOKEN_PATH.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """A filter that rewrites a record's message with mail-link tokens redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact, and always let the record through."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install() -> None:
    """Attach the filter to the access loggers once per process."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
