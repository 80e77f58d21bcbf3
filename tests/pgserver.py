"""A throwaway PostgreSQL server for the test suite, built from the machine's own binaries.

Everything lives in one temporary directory (data, socket, log) that stop() deletes. The server listens on
127.0.0.1 only, with trust auth, and with durability switched off: test data is disposable, so fsync buys
nothing. PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` OS user.
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg
from psycopg import sql

START_TIMEOUT = 60  # seconds; initdb + start take ~1 s here, the margin is for slow CI machines
CMD_TIMEOUT = 120
PG_USER = "postgres"


def _version_key(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path)]  # numeric, so that "15" sorts above "9.6"


def find_pg_bin() -> str | None:
    """Directory of initdb/pg_ctl: env PG_BIN, then PATH, then newest /usr/lib/postgresql/*/bin; or None."""
    candidates = [os.environ.get("PG_BIN")]
    if initdb := shutil.which("initdb"):
        # /usr/local/bin may hold symlinks to only some tools: follow initdb to its real directory.
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for d in candidates:
        if d and all(os.access(os.path.join(d, exe), os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _free_port() -> int:
    # Let the kernel pick a free loopback port; the small race with other processes is fine for tests.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One disposable PostgreSQL server on 127.0.0.1 with its data in a temporary directory."""

    def __init__(self, base_dir: str | None = None):
        """Prepare (but do not start) a server rooted at base_dir, a fresh dir under /tmp by default."""
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="authsvc-pg-")
        self.data_dir = os.path.join(self.base_dir, "data")
        self.socket_dir = os.path.join(self.base_dir, "sock")
        self.log_file = os.path.join(self.base_dir, "server.log")
        self.port = 0
        self.bin_dir: str | None = None
        self._as_root = os.geteuid() == 0

    # -- running server commands -------------------------------------------------------------------
    def _run(self, exe: str, *args: str, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.bin_dir, exe), *args]
        if self._as_root:
            # runuser needs no password or PAM session (unlike su); setpriv is the fallback without it.
            cmd = (["runuser", "-u", PG_USER, "--"] if shutil.which("runuser") else
                   ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--"]) + cmd
        # cwd=base_dir: the postgres user may not be allowed into our cwd. Capturing output cannot hang:
        # pg_ctl -l sends the daemonized postmaster's output to the log file, not to our pipes.
        return subprocess.run(cmd, cwd=self.base_dir, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)

    def _check(self, exe: str, *args: str, timeout: float = CMD_TIMEOUT) -> None:
        res = self._run(exe, *args, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"{exe} {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}"
                               f"\n--- server log tail ---\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no server log)"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """initdb a new cluster, start it on a free 127.0.0.1 port and wait until it accepts connections."""
        self.bin_dir = find_pg_bin()
        if self.bin_dir is None:
            raise RuntimeError("PostgreSQL binaries not found (set PG_BIN or install postgresql)")
        atexit.register(self.stop)  # a crashed run must not leave a server behind; stop() is idempotent
        os.makedirs(self.socket_dir, exist_ok=True)
        if self._as_root:  # initdb runs as postgres and must be able to create data/ inside base_dir
            pw = pwd.getpwnam(PG_USER)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        # --no-sync: the cluster is thrown away after the run, so flushing initdb's files is wasted time.
        self._check("initdb", "-D", self.data_dir, "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                    "--no-locale", "--no-sync")
        # Trust only the private socket and 127.0.0.1 (initdb's default would also trust ::1).
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w") as f:  # "w" keeps the file's owner
            f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        self.port = _free_port()
        # Settings go in postgresql.conf so that restart_server_process() reuses them, port included.
        # fsync/synchronous_commit/full_page_writes off: crash safety is pointless for disposable data.
        # max_connections=200: the pools of several app instances and the concurrency tests run at once.
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
            f.write(f"\n# authsvc test server\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.socket_dir}'\nfsync = off\n"
                    "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
        self._start_process()

    def _start_process(self) -> None:
        # pg_ctl -w waits for postmaster.pid to say "ready"; then a real TCP connection proves it.
        self._check("pg_ctl", "start", "-D", self.data_dir, "-l", self.log_file, "-w",
                    "-t", str(START_TIMEOUT), timeout=START_TIMEOUT + 10)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL on port {self.port} not accepting connections: {exc}\n"
                                       f"--- server log tail ---\n{self._log_tail()}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server at once (immediate: nothing to save) and delete base_dir; safe to call twice."""
        atexit.unregister(self.stop)
        if self.bin_dir and os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            try:
                self._run("pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", "-w", "-t", "30",
                          timeout=40)
            except subprocess.TimeoutExpired:
                pass
            self._kill_leftover()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _kill_leftover(self) -> None:
        # Last resort when pg_ctl could not stop it: SIGKILL the postmaster named in postmaster.pid.
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # no pid file or no such process: already stopped

    def stop_server_process(self) -> None:
        """Stop the server (fast mode) but keep its data directory, to test behaviour while it is down."""
        self._check("pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w", "-t", "30", timeout=40)

    def restart_server_process(self) -> None:
        """Start the stopped server again on the same port and data directory; wait until it is ready."""
        self._start_process()

    def __enter__(self) -> "PostgresServer":
        """Start the server; `with PostgresServer() as pg:` stops it on exit."""
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        """Stop the server and delete its directory."""
        self.stop()

    # -- databases ---------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """Connection URL of database `dbname` as the superuser over TCP."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def _admin(self, *statements: sql.Composable) -> None:
        # autocommit: CREATE/DROP DATABASE cannot run inside a transaction block.
        with psycopg.connect(self.url(), autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt)

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE name [TEMPLATE template] and return its URL."""
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is None:
            self._admin(stmt)
            return self.url(name)
        # Copying needs the template to have no other sessions. A client that just closed its connection
        # may leave a backend still exiting, so end those first (CREATE DATABASE then waits up to 5 s).
        terminate = sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = {} AND pid <> pg_backend_pid()").format(sql.Literal(template))
        self._admin(terminate, stmt + sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS name, disconnecting any sessions still on it."""
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
