"""WSGI entry point: `gunicorn wsgi:app`."""
import sys

from authsvc import create_app
from authsvc.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.stderr.write(f"authsvc: configuration error: {exc}\n")
    sys.exit(2)
