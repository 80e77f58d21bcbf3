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
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

from .common import ROOT, VENV_BIN, WORKLOADS, log
from .cpu import CpuAccount, cpu_busy
from .procs import (Gunicorn, MemorySampler, Processes, pss_mb, terminate_on_signal, authsvc_cli, free_port, http_request,
                    machine_info, proc_status_kb, service_env)
from .report import evaluate, print_table, update_doc
from .wrk import merge_slices, run_wrk


# -- the run -------------------------------------------------------------------------------------------------

class Bench:
    """One benchmark run: its processes, its work directory and its results."""
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
        """Start the durable PostgreSQL and create the service database."""
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
        """PostgreSQL's postmaster pid (for CPU accounting), or None."""
        try:
            with open(os.path.join(self.pg.data_dir, "postmaster.pid")) as fh:
                return int(fh.readline())
        except (OSError, ValueError, AttributeError):
            return None

    def start_service(self) -> None:
        """Migrate, seed, create the introspection client, then start the service under gunicorn."""
        self.secret = secrets.token_urlsafe(48)
        instance = self.workdir / "instance"
        self.env = service_env(os.environ, self.database_url, self.secret, instance, free_port())
        if self.opts.argon2:  # the service, the seeded hashes and the limit all take them from here
            self.env.update(zip(("ARGON2_TIME_COST", "ARGON2_MEMORY_COST", "ARGON2_PARALLELISM"),
                                map(str, self.opts.argon2)))
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
            self.argon2 = Argon2Pool(a["hash"], self.seed["password"], a)
            self.results["argon2_processes"] = self.argon2.processes
            log(f"Argon2id verifiers: m={a['memory_cost']} KiB, t={a['time_cost']}, p={a['parallelism']}, "
                f"{self.argon2.processes} processes")
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
        """A file of `count` unused refresh chains for one refresh slice."""
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
        account = CpuAccount([server.proc.pid], self.postmaster_pid(), server.hash_pool_supervisor())
        try:
            res = run_wrk(self.procs, self.workdir, name, script, f"http://127.0.0.1:{server.port}", args,
                          threads, connections, seconds)
        finally:
            self.memory.sample()
            self.memory.phase = self.memory.target = None
        res["cpu_raw"] = account.finish()
        return res

    def hello_slice(self, seconds: float, phase: str | None) -> dict:
        """One slice of the hello-world floor."""
        return self.wrk_slice("hello", "bearer.lua", self.hello, [self.files["access"], "/"], self.opts.threads,
                              self.opts.connections, seconds, phase)

    def argon2_slice(self, seconds: float) -> dict:
        """One slice of raw Argon2id verifications."""
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
        """With --profile: attach py-spy to every worker for this workload."""
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
        """Stop py-spy so that it writes its output."""
        if self.profiler is not None:
            self.procs.stop(self.profiler, sig=signal.SIGINT, grace=30)  # SIGINT: py-spy writes its output
            self.profiler = None

    # -- workloads -----------------------------------------------------------------------------------------
    def workloads(self) -> None:
        """Measure every selected workload against its limit."""
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
                """One slice of this workload."""
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
                f"service {c['app_ms_per_req']:.2f} ms"
                + (f" (hashing pool {c['pool_ms_per_req']:.2f} ms)" if c.get("pool_ms_per_req") else "") + ", "
                f"PostgreSQL {c['db_ms_per_req']:.2f} ms, "
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
        """Record the workers' and the master's memory at the end."""
        self.memory.sample()
        workers = {}
        for pid in self.service.workers():
            workers[pid] = {"hwm_mb": (proc_status_kb(pid, "VmHWM") or 0) / 1024,
                            "rss_mb": (proc_status_kb(pid, "VmRSS") or 0) / 1024, "pss_mb": pss_mb(pid)}
        master = self.service.proc.pid
        self.results["memory"] = {
            "worker_peak_hwm_mb": max(self.memory.seen.values(), default=0) / 1024,
            "workers_now": workers,
            "master_hwm_mb": (proc_status_kb(master, "VmHWM") or 0) / 1024,
            "workers_seen": len(self.memory.seen),
            "hash_pool_peak_hwm_mb": max(self.memory.pool_seen.values(), default=0) / 1024,
            "hash_pool_processes": len(self.memory.pool_seen),
        }
        self.results["machine"]["loadavg_end"] = os.getloadavg()


# -- entry point ---------------------------------------------------------------------------------------------

def _argon2_params(text: str) -> tuple[int, int, int]:
    """`--argon2 T,M,P`: three positive integers."""
    try:
        params = tuple(int(part) for part in text.split(","))
    except ValueError:
        params = ()
    if len(params) != 3 or min(params) < 1:
        raise argparse.ArgumentTypeError("expected time cost, memory (KiB) and parallelism, e.g. 3,65536,4")
    return params


def parse_args(argv):
    """The command line options."""
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
    p.add_argument("--argon2", metavar="T,M,P", type=_argon2_params, default=None,
                   help="run the service (and so the login limit) with these Argon2id parameters: time cost, "
                        "memory in KiB, parallelism (default: the service's defaults)")
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
    """Run the benchmark; exit status 1 when a target is missed."""
    argv = list(argv if argv is not None else sys.argv[1:])
    opts = parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (bench/run installs it)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, terminate_on_signal)
    signal.signal(signal.SIGHUP, terminate_on_signal)
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
