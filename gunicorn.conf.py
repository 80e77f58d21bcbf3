"""gunicorn settings for production: sync workers, 2n+1 by default; each overridable by environment.

Logs go through authsvc's own handler (LOG_FORMAT, JSON in production); gunicorn's access log stays off because
the app writes one access line per request itself. With PROMETHEUS_MULTIPROC_DIR set, the workers' metrics are
kept in files there (prometheus-client's multiprocess mode): emptied when the server starts, and each exited
worker marked dead so its live gauges go (its counters stay in the totals).
"""
import multiprocessing
import os
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger

from authsvc.logs import gunicorn_logconfig


def _cpus() -> int:
    """The CPUs this process may run on (a container's cpuset), else every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return multiprocessing.cpu_count()


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# 2n+1 sync workers; GUNICORN_WORKERS overrides (empty counts as unset, as docker compose passes it).
workers = int(os.environ.get("GUNICORN_WORKERS") or 2 * _cpus() + 1)
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = 10000  # recycle workers now and then, so a slow leak can never grow without bound
max_requests_jitter = 1000
# The app is loaded once, in the master, and each worker is a fork of it: starting (or recycling) a worker costs
# a fork, not an import of the app (0.6 s of CPU, which a worker recycled every 10,000 requests spread over them:
# about 60 µs each). The app opens no connection and starts no thread before its first request; a forked worker
# drops any pooled connection it inherited (readonly.py). New code needs a restart, not a HUP.
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() not in ("0", "false", "no")
errorlog = "-"
logconfig_dict = gunicorn_logconfig()


class AppLogsRequests(Logger):
    """gunicorn's logger with its access log off for good: the app writes the one access line per request (with
    its request id and mail-link tokens cut out of the path). With `logconfig_dict` set, gunicorn would otherwise
    build every request's access-log fields, a measurable cost per request, and write a second line."""

    def _compute_access_log_enabled(self) -> bool:
        """Never: the app writes one access line per request itself."""
        return False


logger_class = AppLogsRequests

METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

# The hashing pool (authsvc/hashpool.py): Argon2 in one small process per core instead of in every worker, whose
# memory would each grow by the hash's memory cost for good; a supervisor of its own replaces any that dies.
# GUNICORN_HASH_PROCESSES=0 turns it off. The socket is made known to the app through its setting before the app
# is loaded, and lives in a folder only we can enter.
HASH_PROCESSES = int(os.environ.get("GUNICORN_HASH_PROCESSES") or _cpus())
_hash_folder = ""
if HASH_PROCESSES > 0 and not os.environ.get("PASSWORD_HASH_SOCKET"):
    try:
        _hash_folder = tempfile.mkdtemp(prefix="authsvc-hash-")
        os.environ["PASSWORD_HASH_SOCKET"] = os.path.join(_hash_folder, "hash.sock")
    except OSError:  # no writable temporary folder: the workers hash for themselves
        HASH_PROCESSES = 0


def on_starting(server):
    """Start the hashing pool, and the metrics with a clean folder (a previous run's files would be added to this
    run's totals)."""
    if HASH_PROCESSES > 0:
        from pydantic import ValidationError

        from authsvc.config import Settings
        from authsvc.hashpool import start

        try:
            settings = Settings.from_environment()
        except ValidationError:
            return  # the app reports the bad setting itself, in one line, when it loads
        try:
            pool = start(settings.PASSWORD_HASH_SOCKET, HASH_PROCESSES, settings.ARGON2_TIME_COST,
                         settings.ARGON2_MEMORY_COST, settings.ARGON2_PARALLELISM, settings.log_format())
        except OSError as exc:  # the service still runs: each worker hashes for itself (and says so)
            server.log.warning("hashing pool not started: %s", exc)
            server.authsvc_hash_pool = (None, _hash_folder)
            return
        # Kept on the arbiter, not in this module: a HUP re-reads this file as a new module.
        server.authsvc_hash_pool = (pool, _hash_folder)
    if METRICS_DIR:
        folder = Path(METRICS_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()


def child_exit(server, worker):
    """Tell prometheus-client that a worker is gone (multiprocess mode)."""
    if METRICS_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Stop the hashing pool and remove its folder."""
    pool, folder = getattr(server, "authsvc_hash_pool", (None, ""))
    if pool is not None:
        from authsvc.hashpool import stop

        stop(pool)
    if folder and os.path.isdir(folder):
        try:
            os.rmdir(folder)
        except OSError:  # not empty: not ours to clear
            pass
