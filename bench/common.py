"""What every part of the benchmark shares: paths, the workloads, their bounds, and the log line."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "lua"
DOC = ROOT / "docs" / "performance.md"
VENV_BIN = Path(sys.executable).parent
WORKLOADS = ("login", "refresh", "users_me", "verify", "introspect", "revocation")
MEMORY_LIMIT_MB = 100
P99_LIMIT_MS = 50


def log(message: str) -> None:
    """Print one timestamped progress line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def usable_cpus() -> int:
    """The CPUs this process may run on (as gunicorn.conf.py counts them for its 2n+1 workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
