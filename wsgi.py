"""WSGI entry point: `gunicorn wsgi:app`."""
import ctypes
import ctypes.util
import gc
import sys

from authsvc import create_app
from authsvc.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.stderr.write(f"authsvc: configuration error: {exc}\n")
    sys.exit(2)

# What the import built lives as long as the process: move it out of the collector's sight, so a full collection
# walks only what requests create (it walked the ~150,000 objects of the app each time, 80 ms on the benchmark
# machine, a latency spike every few thousand requests). Collected first, and the freed memory handed back to the
# system: gunicorn forks every worker from this process (preload_app), and each would inherit it (about 1 MB).
gc.collect()
gc.freeze()
_libc = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc), "malloc_trim", None) if _libc else None  # glibc only
if _malloc_trim is not None:
    _malloc_trim(0)
