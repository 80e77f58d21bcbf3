"""The authsvc benchmark: throughput against the machine's own limits, measured as ratios in one run.

    bench/run [--duration 10] [--warmup 3] [--connections 8] [--only login,refresh,...] [--json out.json]

One run, on this machine:
  1. starts a throwaway PostgreSQL with the default durability (fsync, synchronous_commit, full_page_writes on),
     migrates it (`authsvc db upgrade`), seeds accounts and sessions, creates a service client
     (`authsvc clients create`);
  2. starts the service exactly as production does (`gunicorn -c gunicorn.conf.py wsgi:app`, AUTHSVC_ENV=
     production, every other setting at its default but RATELIMIT_ENABLED=false), bound to 127.0.0.1;
  3. measures the limits with the same configuration: raw Argon2id verifications per second on every core with
     the service's parameters (the login ceiling), and a bare Flask hello-world (bench/hello.py) under the same
     gunicorn.conf.py, driven exactly like /users/me (the framework floor);
  4. drives each workload with wrk over loopback: login, refresh (one rotating chain per connection),
     GET /users/me, GET /auth/verify, introspection. After a warm-up, each workload runs in short slices that
     alternate with slices of its limit (ABBA), so that the ratio compares two rates measured under the same
     background load: this machine is shared, and other processes' CPU use comes and goes;
  5. checks that every refresh rotation was committed once and in order, that a logout is refused at once by
     the instance that made it and within one second by a second instance on the same database;
  6. prints a table of rps, p50, p99, errors, the workload's limit, the ratio and its target, and the
     workers' peak memory (VmHWM).
Every process it starts (PostgreSQL, gunicorn, wrk, py-spy) is stopped on exit, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import datetime, timezone
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
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes ---------------------------------------------------------------------------------------------

class Processes:
    """Every child this run starts, each in a session of its own, stopped (group and all) on exit."""

    def __init__(self):
        self.children: list[subprocess.Popen] = []

    def popen(self, cmd, **kwargs) -> subprocess.Popen:
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
        for proc in reversed(list(self.children)):
            self.stop(proc, grace=10.0)


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (gunicorn's workers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields start after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def http_request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                 timeout: float = 10.0) -> tuple[int, dict, bytes]:
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

    def start(self, timeout: float = 60.0) -> None:
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
        return int(self.env.get("GUNICORN_WORKERS", (os.cpu_count() or 1) * 2 + 1))

    def workers(self) -> list[int]:
        return children_of(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
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
        self._stop = threading.Event()

    def sample(self) -> None:
        for server in list(self.servers):
            for pid in server.workers():
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
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a vanished worker mid-read is not a reason to stop sampling
                pass

    def stop(self) -> None:
        self._stop.set()


def service_env(base_env: dict, database_url: str, secret: str, instance: Path, port: int) -> dict:
    """The production environment: AUTHSVC_ENV=production and defaults for everything but the essentials."""
    from authsvc.config import Settings

    env = {k: v for k, v in base_env.items()
           if k not in Settings.model_fields and not k.startswith("GUNICORN_")}
    env.update(AUTHSVC_ENV="production", SECRET_KEY=secret, DATABASE_URL=database_url,
               RATELIMIT_ENABLED="false", INSTANCE_PATH=str(instance), GUNICORN_BIND=f"127.0.0.1:{port}",
               PYTHONUNBUFFERED="1")
    return env


def authsvc_cli(env: dict, *args: str) -> str:
    res = subprocess.run([str(VENV_BIN / "authsvc"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"authsvc {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res.stdout


def machine_info() -> dict:
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
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


# -- CPU accounting ------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[int, int]:
    """(all ticks, idle ticks) of the whole machine."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return sum(values[:8]), values[3] + values[4]


def _proc_cpu(pid: int, with_children: bool) -> tuple[float, float, int]:
    """(CPU seconds, of which in the kernel, minor page faults) of `pid` (with_children: and of the children
    it has reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return 0.0, 0.0, 0
    f = [int(v) if v.lstrip("-").isdigit() else 0 for v in stat[stat.rfind(")") + 2:].split()]
    # fields after the name: 7 minflt, 8 cminflt, 11 utime, 12 stime, 13 cutime, 14 cstime
    user, system, faults = f[11], f[12], f[7]
    if with_children:
        user, system, faults = user + f[13], system + f[14], faults + f[8]
    return (user + system) / CLK_TCK, system / CLK_TCK, faults


def tree_usage(root: int | None) -> tuple[float, float, int]:
    """_proc_cpu summed over a process, its reaped children and its live children (gunicorn; the postmaster)."""
    if not root:
        return 0.0, 0.0, 0
    parts = [_proc_cpu(root, True)] + [_proc_cpu(pid, True) for pid in children_of(root)]
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def tree_cpu(root: int | None) -> float:
    return tree_usage(root)[0]


class CpuAccount:
    """Who used the CPU during one slice: the server under test, PostgreSQL, the load generator, everyone else."""

    KEYS = ("wall", "busy", "app", "app_sys", "app_faults", "db", "self")

    def __init__(self, app_pids: list[int], postmaster_pid: int | None):
        self.app_pids, self.postmaster_pid = app_pids, postmaster_pid
        self.start = self._snapshot()

    def _snapshot(self) -> dict:
        total, idle = _cpu_times()
        app = [tree_usage(pid) for pid in self.app_pids]
        return {"wall": time.monotonic(), "busy": (total - idle) / CLK_TCK,
                "app": sum(a[0] for a in app), "app_sys": sum(a[1] for a in app),
                "app_faults": sum(a[2] for a in app), "db": tree_cpu(self.postmaster_pid),
                "self": sum(os.times()[:4])}  # this process and its reaped children: wrk (and py-spy)

    def finish(self) -> dict:
        end = self._snapshot()
        return {k: end[k] - self.start[k] for k in self.KEYS}


def cpu_summary(raw: dict, requests: int) -> dict:
    """Per-request CPU and cores used, from summed CpuAccount deltas."""
    wall = max(raw["wall"], 1e-9)
    other = max(raw["busy"] - raw["app"] - raw["db"] - raw["self"], 0.0)
    per = lambda v: 1000 * v / max(requests, 1)  # noqa: E731
    return {"app_ms_per_req": per(raw["app"]), "db_ms_per_req": per(raw["db"]),
            "loadgen_ms_per_req": per(raw["self"]),
            "total_ms_per_req": per(raw["app"] + raw["db"] + raw["self"]),
            "app_kernel_share": raw["app_sys"] / raw["app"] if raw["app"] else 0.0,
            "app_minor_faults_per_req": raw["app_faults"] / max(requests, 1),
            "app_cores": raw["app"] / wall, "db_cores": raw["db"] / wall, "loadgen_cores": raw["self"] / wall,
            "other_cores": other / wall}


def _pss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- wrk -----------------------------------------------------------------------------------------------------

def run_wrk(procs: Processes, workdir: Path, name: str, script: str, url: str, args: list[str], threads: int,
            connections: int, duration: float) -> dict:
    """Run wrk with bench/lua/common.lua + `script`; return its summary and latency quantile function."""
    lua = workdir / f"{name}.lua"
    lua.write_text((LUA / "common.lua").read_text() + "\n" + (LUA / script).read_text())
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "5s",
           "-s", str(lua), url, "--", *args]
    proc = procs.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=duration + 60)
    finally:
        procs.stop(proc, grace=5)
    summary = re.search(r"^BENCH_JSON (.*)$", out, re.M)
    quantiles = re.search(r"^BENCH_QUANTILES (.*)$", out, re.M)
    if proc.returncode != 0 or not summary or not quantiles:
        raise RuntimeError(f"wrk {name} failed ({proc.returncode}):\n{out}\n{err}")
    res = json.loads(summary.group(1))
    res["quantiles_us"] = [int(v) for v in quantiles.group(1).split(",")]
    res["seconds"] = res["duration_us"] / 1e6
    res["errors"] = res["connect"] + res["read"] + res["write"] + res["status"] + res["timeout"] + res["bad"]
    return res


ERROR_KEYS = ("connect", "read", "write", "status", "timeout", "bad", "errors")


def merge_slices(slices: list[dict], threads: int | None = None, connections: int | None = None) -> dict:
    """One result from several slices: summed counts, the merged latency distribution, summed CPU."""
    requests = sum(s["requests"] for s in slices)
    seconds = sum(s["seconds"] for s in slices)
    res = {"requests": requests, "seconds": seconds, "rps": requests / seconds if seconds else 0.0,
           "slices": len(slices), "slice_rps": [s["requests"] / s["seconds"] for s in slices]}
    if threads is not None:
        res.update(threads=threads, connections=connections)
    if all("quantiles_us" in s for s in slices):
        for key in ERROR_KEYS:
            res[key] = sum(s[key] for s in slices)
        # Each slice's quantile function stands for its requests in 1000 equal parts.
        points = sorted((v, s["requests"] / 1000) for s in slices for v in s["quantiles_us"])
        total = sum(w for _, w in points)

        def quantile(p: float) -> float:
            acc = 0.0
            for value, weight in points:
                acc += weight
                if acc >= p * total - 1e-9:
                    return value / 1000
            return points[-1][0] / 1000

        res.update(p50_ms=quantile(0.50), p90_ms=quantile(0.90), p99_ms=quantile(0.99), p999_ms=quantile(0.999),
                   max_ms=max(s["max_us"] for s in slices) / 1000)
    raw = {k: sum(s["cpu_raw"][k] for s in slices) for k in CpuAccount.KEYS} if all(
        "cpu_raw" in s for s in slices) else None
    if raw:
        res["cpu"] = cpu_summary(raw, requests)
    if all("cpu_s" in s for s in slices):  # Argon2 slices
        res["cpu_ms_per_verify"] = 1000 * sum(s["cpu_s"] for s in slices) / max(requests, 1)
    return res


# -- the run -------------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, opts, stack: ExitStack):
        self.opts, self.stack = opts, stack
        self.procs = Processes()
        self.pg = self.hello = self.argon2 = self.profiler = None
        self.workdir = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
        os.chmod(self.workdir, 0o711)  # PostgreSQL runs as `postgres` (when we are root) and must get through
        self.memory = MemorySampler()
        self.memory.start()
        stack.callback(self.cleanup)
        self.results: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "options": vars(opts), "workloads": {}, "limits": {}}
        self.selected = [w for w in WORKLOADS if not opts.only or w in opts.only]
        self.slices = max(1, round(opts.duration / opts.slice))
        self.slice_seconds = opts.duration / self.slices

    def cleanup(self) -> None:
        """Stop, in order, the sampler, the Argon2 processes, gunicorn, wrk, py-spy, PostgreSQL; then delete the
        work directory."""
        self.memory.stop()
        try:
            if self.argon2 is not None:
                self.argon2.close()
            self.procs.stop_all()
        finally:
            try:
                if self.pg is not None:
                    self.pg.stop()
            finally:
                if not self.opts.keep_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    # -- setup ---------------------------------------------------------------------------------------------
    def start_database(self) -> None:
        from .pg import DurablePostgres

        log("starting PostgreSQL (fsync, synchronous_commit, full_page_writes on)")
        os.makedirs(self.workdir / "pg")
        self.pg = DurablePostgres(base_dir=str(self.workdir / "pg"))
        self.pg.start()
        import psycopg

        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            self.results["postgres"] = {"version": self.pg.version(), **self.pg.settings(conn)}
            conn.execute("CREATE DATABASE authsvc")
        self.database_url = self.pg.url("authsvc")

    def postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.pg.data_dir, "postmaster.pid")) as fh:
                return int(fh.readline())
        except (OSError, ValueError, AttributeError):
            return None

    def start_service(self) -> None:
        self.secret = secrets.token_urlsafe(48)
        instance = self.workdir / "instance"
        self.env = service_env(os.environ, self.database_url, self.secret, instance, free_port())
        log("authsvc db upgrade")
        authsvc_cli(self.env, "db", "upgrade")
        log("seeding accounts and sessions")
        seed_out = self.workdir / "seed.json"
        chains = self.opts.refresh_connections * (2 * self.slices + 2)
        res = subprocess.run([sys.executable, "-m", "bench.seed", str(seed_out), "--users", str(self.opts.users),
                              "--bearer", str(self.opts.bearer_tokens), "--chains", str(chains)],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{res.stdout}{res.stderr}")
        self.seed = json.loads(seed_out.read_text())
        out = authsvc_cli(self.env, "clients", "create", "bench-introspection", "--scope", "introspect")
        client_id = re.search(r"client_id: (\S+)", out).group(1)
        client_secret = re.search(r"client_secret: (\S+)", out).group(1)
        self.basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.files = {
            "emails": self._lines("emails.txt", self.seed["emails"]),
            "access": self._lines("access.txt", self.seed["access_tokens"]),
        }
        self.refresh_pool = list(self.seed["refresh_tokens"])
        self.chains_measured: list[str] = []
        self.results["config"] = self.seed["config"]
        self.results["argon2_params"] = {k: v for k, v in self.seed["argon2"].items() if k != "hash"}
        self.service = Gunicorn(self.procs, "wsgi:app", self.env, self.workdir / "gunicorn-a.log", "/healthz")
        log(f"starting the service: gunicorn -c gunicorn.conf.py wsgi:app on {self.env['GUNICORN_BIND']}")
        self.service.start()
        self.memory.servers.append(self.service)
        self.results["workers"] = len(self.service.workers())

    def start_limits(self) -> None:
        """The hello-world server and the Argon2 verifiers, idle until their slices."""
        if "login" in self.selected:
            from .limits import Argon2Pool

            a = self.seed["argon2"]
            log(f"Argon2id verifiers: m={a['memory_cost']} KiB, t={a['time_cost']}, p={a['parallelism']}, "
                f"{os.cpu_count()} processes")
            self.argon2 = Argon2Pool(a["hash"], self.seed["password"], a)
            self.argon2.run(1.0)  # warm-up
        if set(self.selected) & {"refresh", "users_me", "verify", "introspect"}:
            env = dict(self.env, GUNICORN_BIND=f"127.0.0.1:{free_port()}")
            self.hello = Gunicorn(self.procs, "bench.hello:app", env, self.workdir / "gunicorn-hello.log", "/")
            log(f"hello-world floor: gunicorn -c gunicorn.conf.py bench.hello:app on {env['GUNICORN_BIND']}")
            self.hello.start()
            self.memory.servers.append(self.hello)
            self.hello_slice(self.opts.warmup, "warmup")

    def _lines(self, name: str, lines: list[str]) -> str:
        path = self.workdir / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def take_chains(self, count: int, measured: bool) -> str:
        if len(self.refresh_pool) < count:
            raise RuntimeError("not enough seeded refresh chains")
        chains, self.refresh_pool = self.refresh_pool[:count], self.refresh_pool[count:]
        if measured:
            self.chains_measured += chains
        return self._lines(f"chains-{len(self.refresh_pool)}.txt", chains)

    # -- slices --------------------------------------------------------------------------------------------
    def wrk_slice(self, name: str, script: str, server: Gunicorn, args: list[str], threads: int,
                  connections: int, seconds: float, phase: str) -> dict:
        """One wrk run against `server`, with its CPU accounting; memory peaks go to `phase` (None: warm-up)."""
        self.memory.phase, self.memory.target = phase, server
        account = CpuAccount([server.proc.pid], self.postmaster_pid())
        try:
            res = run_wrk(self.procs, self.workdir, name, script, f"http://127.0.0.1:{server.port}", args,
                          threads, connections, seconds)
        finally:
            self.memory.sample()
            self.memory.phase = self.memory.target = None
        res["cpu_raw"] = account.finish()
        return res

    def hello_slice(self, seconds: float, phase: str | None) -> dict:
        return self.wrk_slice("hello", "bearer.lua", self.hello, [self.files["access"], "/"], self.opts.threads,
                              self.opts.connections, seconds, phase)

    def argon2_slice(self, seconds: float) -> dict:
        account = CpuAccount([p.pid for p in self.argon2.procs], None)
        res = self.argon2.run(seconds)
        res["cpu_raw"] = account.finish()
        return res

    def paired(self, name: str, workload_slice, limit_slice) -> tuple[dict, list[dict]]:
        """Warm up, then alternate limit and workload slices (ABBA order, so a steady drift in the machine's
        background load cancels out): both see the same conditions."""
        background = cpu_busy(1.0)
        if self.opts.warmup > 0:
            workload_slice(self.opts.warmup, None)
        self.start_profiler(name)
        workload, limit = [], []
        try:
            for i in range(self.slices):
                order = ("limit", "workload") if i % 2 == 0 else ("workload", "limit")
                for what in order:
                    if what == "limit":
                        limit.append(limit_slice(self.slice_seconds))
                    else:
                        workload.append(workload_slice(self.slice_seconds, name))
        finally:
            self.stop_profiler()
        return workload, limit, background

    def start_profiler(self, name: str) -> None:
        if not self.opts.profile:
            return
        out = Path(self.opts.profile) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        mode = {"gil": ["--gil"], "wall": ["--idle"], "active": []}[self.opts.profile_mode]
        cmd = [str(VENV_BIN / "py-spy"), "record", "--format", "raw", "--rate", "200", "--subprocesses",
               "--nonblocking", *mode, "-p", str(self.service.proc.pid), "-o", str(out)]
        self.profiler = self.procs.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches to every worker first

    def stop_profiler(self) -> None:
        if self.profiler is not None:
            self.procs.stop(self.profiler, sig=signal.SIGINT, grace=30)  # SIGINT: py-spy writes its output
            self.profiler = None

    # -- workloads -----------------------------------------------------------------------------------------
    def workloads(self) -> None:
        o = self.opts
        plan = {
            "login": ("login.lua", lambda phase: [self.files["emails"], self.seed["password"]],
                      o.threads, o.login_connections),
            "refresh": ("refresh.lua", lambda phase: [self.take_chains(o.refresh_connections, phase is not None)],
                        o.refresh_connections, o.refresh_connections),
            "users_me": ("bearer.lua", lambda phase: [self.files["access"], "/api/v1/users/me"],
                         o.threads, o.connections),
            "verify": ("bearer.lua", lambda phase: [self.files["access"], "/api/v1/auth/verify"],
                       o.threads, o.connections),
            "introspect": ("introspect.lua", lambda phase: [self.files["access"], self.basic],
                           o.threads, o.connections),
        }
        for name in self.selected:
            if name == "revocation":
                self.results["revocation"] = self.revocation_check()
                continue
            script, args, threads, connections = plan[name]

            def workload_slice(seconds, phase, name=name, script=script, args=args, threads=threads,
                               connections=connections):
                return self.wrk_slice(name, script, self.service, args(phase), threads, connections, seconds, phase)

            if name == "login":
                limit_kind, limit_slice = "argon2", self.argon2_slice
            else:
                limit_kind, limit_slice = "hello", lambda seconds: self.hello_slice(seconds, None)
            log(f"{name}: {self.slices} slices of {self.slice_seconds:g} s, interleaved with the {limit_kind} limit")
            wal_before = self.wal_stats()
            w_slices, l_slices, background = self.paired(name, workload_slice, limit_slice)
            wal_after = self.wal_stats()
            res = merge_slices(w_slices, threads, connections)
            lim = merge_slices(l_slices, *((o.threads, o.connections) if limit_kind == "hello" else ()))
            res.update(limit_kind=limit_kind, limit=lim, background_cpu_before=background,
                       wal={k: wal_after[k] - wal_before[k] for k in wal_before})
            peak = self.memory.peaks.get(name)
            if peak:
                res["worker_peak_hwm_mb"] = peak["hwm_kb"] / 1024
                res["workers_seen"] = len(peak["workers"])
            if name == "refresh":
                res["integrity"] = self.refresh_integrity(self.chains_measured, res)
            self.results["workloads"][name] = res
            self.results["limits"].setdefault(limit_kind, {})[name] = lim
            c = res["cpu"]
            log(f"{name}: {res['rps']:.1f} rps (limit {lim['rps']:.1f}/s: ratio {res['rps'] / lim['rps']:.2f}), "
                f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, errors {res['errors']}; CPU per request: "
                f"service {c['app_ms_per_req']:.2f} ms, PostgreSQL {c['db_ms_per_req']:.2f} ms, "
                f"wrk {c['loadgen_ms_per_req']:.2f} ms; other work used {c['other_cores']:.2f} cores; service "
                f"{c['app_kernel_share']:.0%} in the kernel, {c['app_minor_faults_per_req']:.0f} page faults/request")

    def wal_stats(self) -> dict:
        """WAL records, writes and fsyncs (pg_stat_wal, PostgreSQL 14+) and commits of the service's database."""
        import psycopg

        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            out = {"commits": conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = 'authsvc'").fetchone()[0]}
            try:
                row = conn.execute("SELECT wal_records, wal_write, wal_sync FROM pg_stat_wal").fetchone()
                out.update(wal_records=row[0], wal_write=row[1], wal_sync=row[2])
            except psycopg.Error:
                pass
        return out

    def refresh_integrity(self, chains: list[str], res: dict) -> dict:
        """Every rotation the service answered is committed, once, as a single line of descent per session."""
        import psycopg

        hashes = [hashlib.sha256(t.encode()).hexdigest() for t in chains]
        with psycopg.connect(self.database_url) as conn:
            sids = [r[0] for r in conn.execute(
                "SELECT session_id FROM refresh_tokens WHERE token_hash = ANY(%s)", (hashes,))]
            q = lambda sql: conn.execute(sql, (sids,)).fetchall()  # noqa: E731
            rotations = q("SELECT count(*) FROM refresh_tokens WHERE session_id = ANY(%s) "
                          "AND parent_id IS NOT NULL")[0][0]
            revoked = q("SELECT count(*) FROM sessions WHERE id = ANY(%s) AND revoked_at IS NOT NULL")[0][0]
            live_per_session = q("SELECT session_id, count(*) FILTER (WHERE used_at IS NULL) FROM refresh_tokens "
                                 "WHERE session_id = ANY(%s) GROUP BY session_id")
            forks = q("SELECT count(*) FROM (SELECT parent_id FROM refresh_tokens WHERE session_id = ANY(%s) "
                      "AND parent_id IS NOT NULL GROUP BY parent_id HAVING count(*) > 1) f")[0][0]
            orphans = q("SELECT count(*) FROM refresh_tokens c LEFT JOIN refresh_tokens p ON p.id = c.parent_id "
                        "WHERE c.session_id = ANY(%s) AND c.parent_id IS NOT NULL "
                        "AND (p.id IS NULL OR p.used_at IS NULL)")[0][0]
        ok_responses = res["requests"] - res["status"] - res["bad"]
        # wrk stops counting with requests in flight: the server may have committed one more per chain per slice
        in_flight = rotations - ok_responses
        checks = {
            "chains": len(sids), "rotations_committed": rotations, "ok_responses": ok_responses,
            "sessions_revoked": revoked, "forked_parents": forks, "children_of_unused_parents": orphans,
            "chains_with_one_live_token": sum(1 for _, n in live_per_session if n == 1),
        }
        checks["ok"] = (len(sids) == len(chains) and revoked == 0 and forks == 0 and orphans == 0
                        and checks["chains_with_one_live_token"] == len(sids) and 0 <= in_flight <= len(chains))
        log(f"refresh integrity: {checks}")
        return checks

    def revocation_check(self) -> dict:
        """Logout on instance A; A must refuse at once, a second instance B within one second."""
        token = self.seed["revocation"]["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        # Its own instance folder, as on another host: it shares the database, not A's revocation signal, so
        # what it shows is the cross-instance window (its token-check memory expiring), not the local one.
        env_b = dict(self.env, GUNICORN_BIND=f"127.0.0.1:{free_port()}", INSTANCE_PATH=str(self.workdir / "instance-b"))
        other = Gunicorn(self.procs, "wsgi:app", env_b, self.workdir / "gunicorn-b.log", "/healthz")
        log("revocation: starting a second instance on the same database")
        other.start()
        a, b = self.service.port, other.port
        try:
            verify = lambda port: http_request(port, "GET", "/api/v1/auth/verify", bearer)[0]  # noqa: E731
            n = 4 * max(self.service.expected_workers(), 1)
            before = {"a": [verify(a) for _ in range(n)], "b": [verify(b) for _ in range(n)]}
            if set(before["a"]) != {200} or set(before["b"]) != {200}:
                raise RuntimeError(f"revocation check: the token was not live before logout: {before}")
            status, _, body = http_request(a, "POST", "/api/v1/auth/logout", bearer)
            t0 = time.perf_counter()
            if status != 204:
                raise RuntimeError(f"logout answered {status}: {body[:200]!r}")
            on_a = [verify(a) for _ in range(n)]
            # B: poll for 1.5 s, each request on a new connection (so on any of B's workers); the window
            # ends with the last 200 seen. Then every answer must be a refusal.
            last_ok, on_b = None, []
            while time.perf_counter() - t0 < 1.5:
                code = verify(b)
                on_b.append(code)
                if code == 200:
                    last_ok = time.perf_counter() - t0
            tail = [verify(b) for _ in range(n)]
        finally:
            other.stop()
        window_ms = 0.0 if last_ok is None else last_ok * 1000
        res = {
            "same_instance_refused": all(c == 401 for c in on_a), "same_instance_answers": on_a,
            "other_instance_window_ms": window_ms, "other_instance_polls": len(on_b),
            "other_instance_refuses_after": all(c == 401 for c in tail),
        }
        res["ok"] = res["same_instance_refused"] and res["other_instance_refuses_after"] and window_ms <= 1000
        log(f"revocation: instance A refused {sum(c == 401 for c in on_a)}/{n} at once; instance B's last 200 "
            f"came {window_ms:.0f} ms after the logout ({len(on_b)} polls) ({'ok' if res['ok'] else 'FAILED'})")
        return res

    def finish(self) -> None:
        self.memory.sample()
        workers = {}
        for pid in self.service.workers():
            workers[pid] = {"hwm_mb": (proc_status_kb(pid, "VmHWM") or 0) / 1024,
                            "rss_mb": (proc_status_kb(pid, "VmRSS") or 0) / 1024, "pss_mb": _pss_mb(pid)}
        master = self.service.proc.pid
        self.results["memory"] = {
            "worker_peak_hwm_mb": max(self.memory.seen.values(), default=0) / 1024,
            "workers_now": workers,
            "master_hwm_mb": (proc_status_kb(master, "VmHWM") or 0) / 1024,
            "workers_seen": len(self.memory.seen),
        }
        self.results["machine"]["loadavg_end"] = os.getloadavg()


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of the machine's CPU that was busy over `seconds` (before a workload: everyone else's load)."""
    total0, idle0 = _cpu_times()
    time.sleep(seconds)
    total1, idle1 = _cpu_times()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


# -- report --------------------------------------------------------------------------------------------------

TARGETS = {  # workload: (minimum ratio to its limit or None, p99 bound or None)
    "login": (0.90, None),
    "refresh": (0.25, P99_LIMIT_MS),
    "users_me": (0.40, P99_LIMIT_MS),
    "verify": (0.60, P99_LIMIT_MS),
    "introspect": (None, P99_LIMIT_MS),
}
LABELS = {"login": "POST /auth/login", "refresh": "POST /auth/refresh", "users_me": "GET /users/me",
          "verify": "GET /auth/verify", "introspect": "POST /auth/introspect"}


def evaluate(results: dict) -> list[dict]:
    rows = []
    mem_peak = results.get("memory", {}).get("worker_peak_hwm_mb", 0)
    for name, res in results["workloads"].items():
        target, p99_bound = TARGETS[name]
        lim = res["limit"]
        ratio = res["rps"] / lim["rps"] if lim["rps"] else None
        # The same ratio from CPU cost per request instead of wall-clock rates: what the ratio would be on an
        # otherwise idle machine if both are CPU-bound (a cross-check against background noise).
        limit_cpu = lim.get("cpu_ms_per_verify") if res["limit_kind"] == "argon2" else lim["cpu"]["total_ms_per_req"]
        cpu_ratio = limit_cpu / res["cpu"]["total_ms_per_req"] if res["cpu"]["total_ms_per_req"] else None
        checks = {"errors": res["errors"] == 0,
                  "p99": p99_bound is None or res["p99_ms"] <= p99_bound,
                  "ratio": target is None or (ratio is not None and ratio >= target)}
        if name == "refresh":
            checks["integrity"] = res.get("integrity", {}).get("ok", False)
        if name == "verify" and "revocation" in results:
            checks["revocation"] = results["revocation"]["ok"]
        failed = [k for k, ok in checks.items() if not ok]
        rows.append({"workload": name, "label": LABELS[name], "connections": res["connections"],
                     "rps": res["rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "errors": res["errors"],
                     "limit_kind": res["limit_kind"], "limit": lim["rps"], "ratio": ratio, "cpu_ratio": cpu_ratio,
                     "target": target, "p99_bound": p99_bound, "peak_mb": res.get("worker_peak_hwm_mb"),
                     "result": "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"})
    results["summary"] = {"rows": rows, "memory_ok": mem_peak <= MEMORY_LIMIT_MB,
                          "all_pass": all(r["result"] == "PASS" for r in rows) and mem_peak <= MEMORY_LIMIT_MB}
    return rows


def markdown(results: dict) -> str:
    rows = results["summary"]["rows"]
    m = results["machine"]
    lines = [
        "| workload | conns | req/s | p50 ms | p99 ms | errors | limit (same slices) | ratio | CPU-cost ratio "
        "| target | result |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        limit = f"Argon2id {r['limit']:.1f}/s" if r["limit_kind"] == "argon2" else f"hello {r['limit']:.0f}/s"
        target = ([f"≥ {r['target']:.2f}"] if r["target"] is not None else []) + \
                 ([f"p99 ≤ {r['p99_bound']} ms"] if r["p99_bound"] is not None else [])
        lines.append(f"| {r['label']} | {r['connections']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {r['errors']} | {limit} | {fmt(r['ratio'])} | {fmt(r['cpu_ratio'])} "
                     f"| {', '.join(target) or '-'} | {r['result']} |")
    out = ["\n".join(lines), "",
           "CPU time per request, summed over the measured slices (the service's gunicorn master and workers, "
           "every PostgreSQL process, wrk), and the cores other processes on the machine kept busy meanwhile:", "",
           "| workload | service | PostgreSQL | wrk | total | limit's total | other work (cores) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        res = results["workloads"][r["workload"]]
        c, lim = res["cpu"], res["limit"]
        lim_total = (f"{lim['cpu_ms_per_verify']:.2f} ms (Argon2id)" if res["limit_kind"] == "argon2"
                     else f"{lim['cpu']['total_ms_per_req']:.2f} ms (hello)")
        out.append(f"| {r['label']} | {c['app_ms_per_req']:.2f} ms | {c['db_ms_per_req']:.2f} ms | "
                   f"{c['loadgen_ms_per_req']:.2f} ms | {c['total_ms_per_req']:.2f} ms | {lim_total} | "
                   f"{c['other_cores']:.2f} |")
    out.append("")
    p = results.get("argon2_params")
    if p and "argon2" in results["limits"]:
        out.append(f"- Login's limit: raw Argon2id verifications (m={p['memory_cost']} KiB, t={p['time_cost']}, "
                   f"p={p['parallelism']}, the service's settings) in {m['cores']} processes, one per core.")
    if "hello" in results["limits"]:
        out.append("- The other workloads' limit: bench/hello.py (bare Flask, one JSON endpoint) under the same "
                   "gunicorn.conf.py, driven by the same wrk settings as /users/me.")
    opts = results["options"]
    out.append(f"- Each workload: {opts['warmup']:g} s warm-up, then {results['slices']} slices of "
               f"{results['slice_seconds']:g} s alternating with as many slices of its limit (ABBA order).")
    mem = results.get("memory", {})
    out.append(f"- Workers' peak memory (VmHWM, max over the {mem.get('workers_seen', '?')} workers seen): "
               f"{mem.get('worker_peak_hwm_mb', 0):.1f} MB (limit {MEMORY_LIMIT_MB} MB: "
               f"{'PASS' if results['summary']['memory_ok'] else 'FAIL'}); gunicorn master "
               f"{mem.get('master_hwm_mb', 0):.1f} MB.")
    if "revocation" in results:
        r = results["revocation"]
        out.append(f"- Revocation: after a logout on instance A, A refused "
                   f"{sum(c == 401 for c in r['same_instance_answers'])}/{len(r['same_instance_answers'])} "
                   f"verifies at once; instance B (same database) answered its last 200 "
                   f"{r['other_instance_window_ms']:.0f} ms after the logout ({'PASS' if r['ok'] else 'FAIL'}).")
    ref = results["workloads"].get("refresh", {})
    if ref.get("integrity"):
        i = ref["integrity"]
        out.append(f"- Refresh: {i['rotations_committed']} rotations committed for {i['ok_responses']} answered "
                   f"over {i['chains']} chains; no fork, no revoked session, one live token per chain: "
                   f"{'PASS' if i['ok'] else 'FAIL'}. WAL fsyncs during the workload: "
                   f"{ref['wal'].get('wal_sync', '?')} for {ref['wal']['commits']} commits.")
    pg = results.get("postgres", {})
    out.append(f"- PostgreSQL {pg.get('version')}: fsync={pg.get('fsync')}, "
               f"synchronous_commit={pg.get('synchronous_commit')}, full_page_writes={pg.get('full_page_writes')}.")
    out.append(f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}, Python "
               f"{m['python']}, gunicorn {m['gunicorn']} ({results.get('workers')} sync workers), Flask {m['flask']}, "
               f"{m['wrk']}; load average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end.")
    return "\n".join(out)


def print_table(results: dict) -> None:
    print()
    print(markdown(results))
    print()


def update_doc(results: dict, command: str) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
    block = f"{start}\nRun of {results['started_at']}: `{command}`\n\n{markdown(results)}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    DOC.write_text(text)
    log(f"updated {DOC.relative_to(ROOT)}")


# -- entry point ---------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0,
                   help="measured seconds per workload, and as many for its limit (default 10)")
    p.add_argument("--slice", type=float, default=2.0,
                   help="length of the alternating workload/limit slices (default 2 s)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each workload (default 3)")
    p.add_argument("--connections", type=int, default=8,
                   help="wrk connections for /users/me, /auth/verify, introspection and the hello floor (default 8)")
    p.add_argument("--refresh-connections", type=int, default=8,
                   help="concurrent refresh chains, one per wrk thread and connection (default 8)")
    p.add_argument("--login-connections", type=int, default=6, help="wrk connections for login (default 6)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads, except for refresh (default 2)")
    p.add_argument("--only", type=lambda s: [w.strip() for w in s.split(",") if w.strip()], default=None,
                   help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    p.add_argument("--json", metavar="FILE", help="write every number of the run to FILE")
    p.add_argument("--update-doc", action="store_true", help="write the results into docs/performance.md")
    p.add_argument("--profile", metavar="DIR",
                   help="record the service's workers with py-spy during each workload (raw stacks in DIR/NAME.txt; "
                        "summarise with python -m bench.profile); slows the service down")
    p.add_argument("--profile-mode", choices=("gil", "active", "wall"), default="gil",
                   help="py-spy samples: holding the GIL (Python CPU, the default), every thread py-spy thinks "
                        "active (includes waits on PostgreSQL), or all (--idle)")
    p.add_argument("--users", type=int, default=200, help="seeded accounts (login goes round them)")
    p.add_argument("--bearer-tokens", type=int, default=32, help="sessions whose access tokens are presented")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temporary directory (logs, data)")
    opts = p.parse_args(argv)
    if opts.only:
        unknown = set(opts.only) - set(WORKLOADS)
        if unknown:
            p.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if opts.profile and not (VENV_BIN / "py-spy").exists():
        p.error("--profile needs py-spy in the venv (bench/run installs it)")
    return opts


def main(argv=None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    opts = parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (bench/run installs it)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    command = " ".join(["bench/run", *argv])
    with ExitStack() as stack:
        bench = Bench(opts, stack)
        try:
            bench.results["machine"] = machine_info()
            bench.results.update(slices=bench.slices, slice_seconds=bench.slice_seconds)
            log(f"{bench.results['machine']['cores']} cores, workdir {bench.workdir}")
            bench.start_database()
            bench.start_service()
            bench.start_limits()
            bench.workloads()
            bench.finish()
        except KeyboardInterrupt:
            log("interrupted: stopping everything")
            return 130
        except Exception:
            if opts.keep_workdir:
                log(f"logs kept in {bench.workdir}")
            raise
        if bench.results["workloads"]:
            evaluate(bench.results)
            print_table(bench.results)
        if opts.json:
            Path(opts.json).write_text(json.dumps(bench.results, indent=2, default=_json_default))
            log(f"wrote {opts.json}")
        if opts.update_doc and bench.results["workloads"]:
            update_doc(bench.results, command)
        return 0 if bench.results.get("summary", {}).get("all_pass", True) else 1


def _json_default(value):
    if isinstance(value, set):
        return sorted(value)
    return str(value)
