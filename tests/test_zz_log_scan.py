"""Runs last (by name): no password or token the suite handled appears in any log record of the run."""
from .conftest import LOG_RECORDS, PASSWORD, SECRETS, remember


def test_no_secret_reached_the_logs():
    remember(PASSWORD, "another fine passphrase 8", "wrong password 1")
    assert LOG_RECORDS, "the log capture saw nothing: the scan would prove nothing"
    leaks = {secret[:12] + "…": line[:200] for secret in SECRETS for line in LOG_RECORDS if secret in line}
    assert not leaks, leaks


def test_the_scan_would_catch_a_leak():
    import logging

    logging.getLogger("authsvc.test").warning("oops %s", "a-secret-value-123")
    remember("a-secret-value-123")
    assert any("a-secret-value-123" in line for line in LOG_RECORDS)
    SECRETS.discard("a-secret-value-123")
