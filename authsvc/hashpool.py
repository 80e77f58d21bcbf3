"""Argon2id in a few small processes of their own, one per core, instead of in every web worker.

Each Argon2 verification needs its memory cost (19 MiB by default) in the process that runs it, and glibc keeps
that block afterwards: every gunicorn worker that ever hashed carried 19 MiB more for good. With the pool (started
by gunicorn.conf.py; `GUNICORN_HASH_PROCESSES`), the workers send each hash to one of these processes over a Unix
socket only the service's user can open, and wait for the answer: the Argon2 memory exists once per core, not
once per worker, and at most one hash per core runs at a time.

This module is the whole pool: a supervisor (run as a script, so it imports nothing of the app) that holds the
listening socket and forks the hashing processes (about 13 MiB each before the Argon2 block), replacing any that
dies; the server loop they run; and the client the app uses. Anything that goes wrong on the client's side of the socket
(no pool, a process gone, a timeout, a listener that is not running as our own user) is raised as
`PoolUnavailable`; passwords.py then hashes in the worker itself.

Wire format, one request per connection: a request is `op` (1 byte: `V` verify, `H` hash), then length-prefixed
(4 bytes, big-endian) fields: for `V` the stored hash and the password, for `H` the password. The answer is one
status byte (`1` match or hashed, `0` no match, `E` refused) and a length-prefixed field (the new hash for `H`).
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

MAX_FIELD = 32768  # a stored hash is about 100 bytes and a password at most 4096 characters (16 KiB of UTF-8)
# The whole exchange, connecting included. Well under gunicorn's worker timeout (30 s), so that a stalled pool
# leads to hashing in the worker, not to the worker being killed; a queue of a few hashes per core takes
# milliseconds.
TIMEOUT_SECONDS = 5.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# A hashing process that dies is replaced at once. One that dies this soon after it started counts as a failed
# start; after this many in a row the pool gives up and closes its socket, so the workers hash for themselves at
# once instead of each waiting out TIMEOUT_SECONDS on a socket nobody answers.
QUICK_DEATH_SECONDS = 1.0
QUICK_DEATHS_TO_GIVE_UP = 5


class PoolUnavailable(Exception):
    """The pool did not answer: not running, gone, or too slow."""


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_exactly(sock: socket.socket, size: int, deadline: float | None = None) -> bytes:
    chunks, left = [], size
    while left:
        if deadline is not None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_field(sock: socket.socket, deadline: float | None = None) -> bytes:
    (size,) = struct.unpack(">I", _read_exactly(sock, 4, deadline))
    if size > MAX_FIELD:
        raise ValueError("field too long")
    return _read_exactly(sock, size, deadline)


# --- the client (in the web workers) ---------------------------------------------------------------------------

def _ask(path: str, request: bytes) -> tuple[bytes, bytes]:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT_SECONDS)
            sock.connect(path)
            # A password goes only to a process of our own user: a socket path someone else got to first (a
            # shared folder, a stale setting) is never trusted with one, nor with the answer.
            credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            _pid, uid, _gid = _PEERCRED.unpack(credentials)
            if uid != os.geteuid():
                raise PermissionError(f"the socket's listener runs as uid {uid}")
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(request)
            status = _read_exactly(sock, 1, deadline)
            return status, _read_field(sock, deadline)
    except (OSError, ValueError, struct.error) as exc:
        raise PoolUnavailable(f"{exc.__class__.__name__}: {exc}") from None


def verify(path: str, stored: str, password: str) -> bool:
    """Whether `password` matches the Argon2 hash `stored`, asked of the pool at `path`."""
    status, _ = _ask(path, b"V" + _field(stored.encode()) + _field(password.encode()))
    if status not in (b"0", b"1"):
        raise PoolUnavailable("the pool refused the request")
    return status == b"1"


def hash_password(path: str, password: str) -> str:
    """A new Argon2 hash of `password`, made by the pool at `path`."""
    status, body = _ask(path, b"H" + _field(password.encode()))
    if status != b"1":
        raise PoolUnavailable("the pool refused the request")
    return body.decode()


# --- the server (its own processes, started by gunicorn.conf.py) -----------------------------------------------

def _answer(hasher, conn: socket.socket) -> None:
    from argon2.exceptions import InvalidHashError, VerificationError

    op = _read_exactly(conn, 1)
    if op == b"V":
        stored, password = _read_field(conn).decode(), _read_field(conn)
        try:
            ok = hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            ok = False
        conn.sendall((b"1" if ok else b"0") + _field(b""))
    elif op == b"H":
        conn.sendall(b"1" + _field(hasher.hash(_read_field(conn)).encode()))
    else:
        conn.sendall(b"E" + _field(b""))


def keep_hash_memory() -> None:
    """Have glibc keep Argon2's block in this process's heap from one hash to the next (hashing processes only).

    glibc maps any block over 32 MiB (its largest mmap threshold) afresh and unmaps it on free. With a memory cost
    above that (argon2-cffi's default is 64 MiB), every hash would fault in and the kernel zero the whole block
    again: 16,384 page faults at 64 MiB, a fifth of a verification's CPU on the benchmark machine. A hashing
    process holds one block at a time, and holding it between hashes is its purpose. No effect below 32 MiB
    (glibc keeps those blocks already), nor without glibc.
    """
    import ctypes

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own symbols: libc's, with no search
    if mallopt is not None:
        m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
        mallopt(m_mmap_max, 0)  # large blocks from the heap too (glibc still maps when the heap cannot grow)
        mallopt(m_trim_threshold, 1 << 30)  # and a freed block is not handed back


def serve(listener: socket.socket, parent: int, time_cost: int, memory_cost: int, parallelism: int) -> None:
    """Answer requests on `listener` while the process `parent` (the pool's supervisor) is this one's parent."""
    from argon2 import PasswordHasher, Type

    keep_hash_memory()
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID)
    while os.getppid() == parent:  # orphaned (the supervisor was killed outright): stop
        if not select.select([listener], [], [], 1.0)[0]:
            continue
        try:
            conn, _ = listener.accept()
        except BlockingIOError:  # another pool process took this one
            continue
        with conn:
            conn.settimeout(TIMEOUT_SECONDS)
            try:
                _answer(hasher, conn)
            except Exception:  # noqa: BLE001 - a broken or malformed request costs its own connection only
                pass


class _Supervisor:
    """Keeps `processes` hashing processes forked and serving on `listener` while gunicorn's master lives."""

    def __init__(self, listener: socket.socket, master: int, processes: int, params: tuple, log_format: str):
        self.listener, self.master, self.processes, self.params = listener, master, processes, params
        self.log_format = log_format
        self.children: dict[int, float] = {}  # pid: when it started
        self.quick_deaths = 0  # in a row: processes that ended (or could not be forked) as they started
        self.latest = 0  # the pid forked last

    def say(self, level: str, message: str) -> None:
        """One line on stderr (gunicorn's error log) in the service's LOG_FORMAT; never fails."""
        now = time.time()
        millis = int(now % 1 * 1000)
        if self.log_format == "json":  # the fields and time format of the app's JsonFormatter
            stamp = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{millis:03d}Z"
            line = json.dumps({"time": stamp, "level": level, "logger": "authsvc.hashpool", "message": message,
                               "request_id": ""}, ensure_ascii=False)
        else:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))},{millis:03d} {level} " \
                   f"authsvc.hashpool: {message}"
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:  # nobody reads the log any more: the pool keeps hashing all the same
            pass

    def fork(self) -> bool:
        """Start one hashing process; False if the system refused a new process (it counts as a quick death)."""
        supervisor = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: the next tick tries again
            self.quick_deaths += 1
            self.say("WARNING", f"could not start a hashing process: {exc}")
            return False
        if pid == 0:  # the hashing process: signals unblocked, serve until the supervisor is gone
            code = 0
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                serve(self.listener, supervisor, *self.params)
            except BaseException as exc:  # noqa: BLE001 - never return into the supervisor's loop
                self.say("ERROR", f"hashing process {os.getpid()} failed: {exc!r}")
                code = 1
            finally:
                os._exit(code)
        self.children[pid], self.latest = time.monotonic(), pid
        return True

    def reap(self) -> None:
        """Collect ended hashing processes, counting those that ended as they started."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            started = self.children.pop(pid, None)
            if started is None:
                continue
            quick = time.monotonic() - started < QUICK_DEATH_SECONDS
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            code = os.waitstatus_to_exitcode(status)
            self.say("WARNING", f"hashing process {pid} ended ({f'signal {-code}' if code < 0 else f'status {code}'})"
                                "; starting another")

    def top_up(self) -> bool:
        """Fork what is missing; False once the pool gives up (QUICK_DEATHS_TO_GIVE_UP failed starts in a row)."""
        latest = self.children.get(self.latest, 0.0)
        if self.quick_deaths and latest and time.monotonic() - latest >= QUICK_DEATH_SECONDS:
            self.quick_deaths = 0  # the latest replacement lived: whatever killed its predecessors has passed
        while len(self.children) < self.processes:
            if self.quick_deaths >= QUICK_DEATHS_TO_GIVE_UP:
                self.say("ERROR", f"{self.quick_deaths} hashing processes in a row ended as they started; giving "
                                  "up: the workers hash for themselves")
                return False
            if not self.fork():
                break  # retried at the next tick, a second later
        return True

    def run(self) -> None:
        """Fork the hashing processes, replace any that ends, and end them all on SIGTERM or without the master."""
        watched = {signal.SIGCHLD, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            while os.getppid() == self.master:
                # A SIGTERM to the whole process group may reach the hashing processes first: stop rather than
                # replace them.
                if signal.SIGTERM in signal.sigpending():
                    break
                self.reap()
                if not self.top_up():
                    break
                received = signal.sigtimedwait(watched, 1.0)
                if received is not None and received.si_signo == signal.SIGTERM:
                    break
        finally:
            # Without the socket in this process or its children, connecting fails at once (no waiting).
            self.listener.close()
            for pid in self.children:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for pid in list(self.children):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass


@dataclass
class Pool:
    """A started pool: its supervisor, and the socket it listens on (the file this start created)."""

    process: subprocess.Popen
    path: str
    inode: int


def start(path: str, processes: int, time_cost: int, memory_cost: int, parallelism: int,
          log_format: str = "text") -> Pool:
    """Listen on the Unix socket `path` (owner only) and start the pool's supervisor with `processes` hashing
    processes.

    The caller keeps no copy of the listening socket: once the pool is gone, connecting fails at once and the
    workers hash for themselves, instead of waiting on a socket nobody answers.
    """
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):  # never delete anything but a stale socket
            raise FileExistsError(f"{path} exists and is not a socket")
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: only the service's own user may ask for hashes
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(128)
    try:
        fd = listener.fileno()
        process = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(fd), str(os.getpid()),
                                    str(processes), str(time_cost), str(memory_cost), str(parallelism), log_format],
                                   pass_fds=(fd,), close_fds=True)
        return Pool(process, path, os.lstat(path).st_ino)
    except OSError:
        os.unlink(path)
        raise
    finally:
        listener.close()


def stop(pool: Pool) -> None:
    """End the pool (its supervisor ends the hashing processes) and remove its socket, if it is still the one
    this pool created: after a binary upgrade (USR2) the new master's pool listens on the same path."""
    pool.process.terminate()
    try:
        pool.process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # one that will not end is killed (its processes follow within a second)
        pool.process.kill()
        pool.process.wait()
    try:
        current = os.lstat(pool.path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(current.st_mode) and current.st_ino == pool.inode:
        os.unlink(pool.path)


def main(argv: list[str]) -> None:
    """`hashpool.py FD MASTER PROCESSES TIME_COST MEMORY_COST PARALLELISM LOG_FORMAT`: supervise the pool on the
    inherited listening socket FD."""
    *numbers, log_format = argv
    fd, master, processes, *params = (int(value) for value in numbers)
    # Ctrl-C at a terminal reaches the whole process group; the master ends the pool itself (or, killed, leaves
    # it orphaned, which it notices within a second).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.socket(fileno=fd)
    listener.setblocking(False)
    _Supervisor(listener, master, processes, tuple(params), log_format).run()


if __name__ == "__main__":
    main(sys.argv[1:])
