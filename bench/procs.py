"""The processes a run starts (PostgreSQL helpers aside): gunicorn, the CLI, and what /proc says of them."""
from __future__ import annotations

import http.client
import os
import platform
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from .common import ROOT, VENV_BIN, usable_cpus


# -- processes ---------------------------------------------------------------------------------------------

class Processes:
    """Every child this run starts, each in a session of its own, stopped (group and all) on exit."""

    def __init__(self):
        self.children: list[subprocess.Popen] = []

    def popen(self, cmd, **kwargs) -> subprocess.Popen:
        """Start a child in a session of its own and keep track of it."""
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig=signal.SIGTERM, grace: float = 25.0) -> None:
        """Signal the child, wait up to `grace` seconds, then SIGKILL its whole process group."""
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (workers, wrk threads are threads)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        if proc in self.children:
            self.children.remove(proc)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for proc in reversed(list(self.children)):
            self.stop(proc, grace=10.0)


def terminate_on_signal(signum, _frame):
    """Turn SIGTERM into KeyboardInterrupt, so that every child is stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (index 1 is the parent's pid), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    return stat[stat.rfind(")") + 2:].split()


def process_tree() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc: parent pid -> child pids."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None:
                tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def children_of(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """Pids whose parent is `pid` (gunicorn's workers), from `tree` or a fresh pass over /proc."""
    return list((process_tree() if tree is None else tree).get(pid, ()))


def kb_field(path: str, field: str) -> int | None:
    """A `Field:   N kB` line's N from a /proc file (status, meminfo, smaps_rollup), or None if it is gone."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_status_kb(pid: int, field: str) -> int | None:
    """A kB field of /proc/PID/status (VmHWM, VmRSS), or None if the process is gone."""
    return kb_field(f"/proc/{pid}/status", field)


def http_request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                 timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One request on a new connection to 127.0.0.1:port: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class Gunicorn:
    """One gunicorn master (and its workers) started from the checkout as the Dockerfile starts it."""

    def __init__(self, procs: Processes, app_spec: str, env: dict, log_path: Path, ready_path: str):
        self.procs, self.app_spec, self.env, self.log_path, self.ready_path = procs, app_spec, env, log_path, ready_path
        self.port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
        self.proc: subprocess.Popen | None = None
        self._is_pool: dict[int, bool] = {}  # child pid -> whether it is the hashing pool's supervisor

    def start(self, timeout: float = 60.0) -> None:
        """Start gunicorn and wait until its health path answers and every worker is up."""
        self._log = open(self.log_path, "ab")
        cmd = [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", self.app_spec]
        self.proc = self.procs.popen(cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn {self.app_spec} exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if http_request(self.port, "GET", self.ready_path, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn {self.app_spec} not ready after {timeout}s; see {self.log_path}")
            time.sleep(0.2)
        # every worker up (gunicorn forks them one after another)
        while len(self.workers()) < self.expected_workers() and time.monotonic() < deadline:
            time.sleep(0.1)

    def expected_workers(self) -> int:
        """The worker count gunicorn.conf.py asks for in this environment."""
        return int(self.env.get("GUNICORN_WORKERS", usable_cpus() * 2 + 1))

    def _children(self, tree: dict[int, list[int]] | None = None) -> dict[int, bool]:
        """The master's children: pid -> whether it is the hashing pool's supervisor (not a worker)."""
        if not self.proc or self.proc.poll() is not None:
            return {}
        found = {}
        for pid in children_of(self.proc.pid, tree):
            if pid not in self._is_pool:  # a pid's role never changes: its command line is read once
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        self._is_pool[pid] = b"hashpool.py" in fh.read()
                except OSError:
                    continue
            found[pid] = self._is_pool[pid]
        return found

    def workers(self, tree: dict[int, list[int]] | None = None) -> list[int]:
        """The gunicorn master's worker pids."""
        return [pid for pid, pool in self._children(tree).items() if not pool]

    def hash_pool_supervisor(self, tree: dict[int, list[int]] | None = None) -> int | None:
        """The pid of the hashing pool's supervisor (a child of the master), if there is a pool."""
        return next((pid for pid, pool in self._children(tree).items() if pool), None)

    def hash_pool(self, tree: dict[int, list[int]] | None = None) -> list[int]:
        """The pids of the hashing pool's processes (children of its supervisor)."""
        tree = process_tree() if tree is None else tree
        supervisor = self.hash_pool_supervisor(tree)
        return children_of(supervisor, tree) if supervisor else []

    def stop(self) -> None:
        """Stop gunicorn gracefully (SIGTERM), then whatever is left of it."""
        if self.proc is not None:
            self.procs.stop(self.proc)  # SIGTERM: graceful shutdown, as an orchestrator would
            self.proc = None
            self._log.close()


class MemorySampler(threading.Thread):
    """Polls every gunicorn worker's VmHWM (peak resident set) and VmRSS; keeps the maxima per phase."""

    def __init__(self, interval: float = 0.25):
        super().__init__(daemon=True)
        self.interval, self.servers, self.phase, self.target = interval, [], None, None
        self.peaks: dict[str, dict] = {}
        self.seen: dict[int, int] = {}  # worker pid -> last VmHWM (kB)
        self.pool_seen: dict[int, int] = {}  # hashing-pool pid -> last VmHWM (kB)
        self._stop = threading.Event()

    def sample(self) -> None:
        """Record each watched worker's VmHWM under the current phase (and the hashing pool's)."""
        tree = process_tree()  # one pass over /proc a sample: the bench's own CPU competes with the service's
        for server in list(self.servers):
            for pid in server.hash_pool(tree) if server.app_spec == "wsgi:app" else ():
                self.pool_seen[pid] = max(self.pool_seen.get(pid, 0), proc_status_kb(pid, "VmHWM") or 0)
            for pid in server.workers(tree):
                hwm, rss = proc_status_kb(pid, "VmHWM"), proc_status_kb(pid, "VmRSS")
                if hwm is None:
                    continue
                if server.app_spec == "wsgi:app":
                    self.seen[pid] = max(self.seen.get(pid, 0), hwm)
                if self.phase and server is self.target:
                    peak = self.peaks.setdefault(self.phase, {"hwm_kb": 0, "rss_kb": 0, "workers": set()})
                    peak["hwm_kb"] = max(peak["hwm_kb"], hwm)
                    peak["rss_kb"] = max(peak["rss_kb"], rss or 0)
                    peak["workers"].add(pid)

    def run(self) -> None:
        """Sample every `interval` seconds until stopped."""
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a vanished worker mid-read is not a reason to stop sampling
                pass

    def stop(self) -> None:
        """End the sampling loop."""
        self._stop.set()


def service_env(base_env: dict, database_url: str, secret: str, instance: Path, port: int) -> dict:
    """The production environment: AUTHSVC_ENV=production and defaults for everything but the essentials."""
    from authsvc.config import Settings

    env = {k: v for k, v in base_env.items()
           if k not in Settings.model_fields and not k.startswith("GUNICORN_")}
    env.update(AUTHSVC_ENV="production", SECRET_KEY=secret, DATABASE_URL=database_url,
               RATELIMIT_ENABLED="false", INSTANCE_PATH=str(instance), GUNICORN_BIND=f"127.0.0.1:{port}",
               PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
               PYTHONUNBUFFERED="1")
    return env


def authsvc_cli(env: dict, *args: str) -> str:
    """Run an `authsvc` command with `env`; its output, or an error with it."""
    res = subprocess.run([str(VENV_BIN / "authsvc"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"authsvc {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res.stdout


def machine_info() -> dict:
    """Cores, memory, kernel and versions of what the run uses."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
    except OSError:
        pass
    mem_kb = proc_meminfo("MemTotal")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    import gunicorn
    import flask

    return {
        "cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(), "python": platform.python_version(), "gunicorn": gunicorn.__version__,
        "flask": flask.__version__, "wrk": wrk_version[0].strip() if wrk_version else "?",
        "loadavg_start": os.getloadavg(),
    }


def proc_meminfo(field: str) -> int | None:
    """A kB field of /proc/meminfo."""
    return kb_field("/proc/meminfo", field)


def pss_mb(pid: int) -> float | None:
    """A process's proportional set size in MB (shared pages split among their users), or None."""
    kb = kb_field(f"/proc/{pid}/smaps_rollup", "Pss")
    return None if kb is None else kb / 1024
