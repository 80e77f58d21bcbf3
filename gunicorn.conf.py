"""gunicorn settings for production: sync workers, 2n+1 by default; each overridable by environment."""
import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = 10000  # recycle workers now and then, so a slow leak can never grow without bound
max_requests_jitter = 1000
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "") in ("1", "true", "yes") else None
errorlog = "-"
