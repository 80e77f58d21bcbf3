"""Argon2id in a few small processes of their own, one per core, instead of in every web worker.

Each Argon2 verification needs its memory cost (19 MiB by default) in the process that runs it, and glibc keeps
that block afterwards: every gunicorn worker that ever hashed carried 19 MiB more for good. With the pool (started
by gunicorn.conf.py; `GUNICORN_HASH_PROCESSES`), the workers send each hash to one of these processes over a Unix
socket only the service's user can open, and wait for the answer: the Argon2 memory exists once per core, not
once per worker, and at most one hash per core runs at a time.

This module is the whole pool: the server loop (run as a script, so it imports nothing of the app: about 13 MiB
before its Argon2 block) and the client the app uses. Anything that goes wrong on the client's side of the socket
(no pool, a process gone, a timeout, a listener that is not running as our own user) is raised as
`PoolUnavailable`; passwords.py then hashes in the worker itself.

Wire format, one request per connection: a request is `op` (1 byte: `V` verify, `H` hash), then length-prefixed
(4 bytes, big-endian) fields: for `V` the stored hash and the password, for `H` the password. The answer is one
status byte (`1` match or hashed, `0` no match, `E` refused) and a length-prefixed field (the new hash for `H`).
"""
from __future__ import annotations

import os
import select
import socket
import stat
import struct
import sys
import time

MAX_FIELD = 32768  # a stored hash is about 100 bytes and a password at most 4096 characters (16 KiB of UTF-8)
# The whole exchange, connecting included. Well under gunicorn's worker timeout (30 s), so that a stalled pool
# leads to hashing in the worker, not to the worker being killed; a queue of a few hashes per core takes
# milliseconds.
TIMEOUT_SECONDS = 5.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


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


def serve(listener: socket.socket, parent: int, time_cost: int, memory_cost: int, parallelism: int) -> None:
    """Answer requests on `listener` while the process `parent` (gunicorn's master) is this one's parent."""
    from argon2 import PasswordHasher, Type

    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID)
    while os.getppid() == parent:  # orphaned (the master was killed outright, even before we got here): stop
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


def start(path: str, processes: int, time_cost: int, memory_cost: int, parallelism: int) -> list:
    """Listen on the Unix socket `path` (owner only) and start `processes` pool processes answering on it.

    The caller keeps no copy of the listening socket: once every pool process is gone, connecting fails at once
    and the workers hash for themselves, instead of waiting on a socket nobody answers.
    """
    import subprocess

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
    started: list = []
    try:
        fd = listener.fileno()
        for _ in range(processes):
            started.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), str(fd), str(os.getpid()),
                                             str(time_cost), str(memory_cost), str(parallelism)],
                                            pass_fds=(fd,), close_fds=True))
    except OSError:
        stop(started, path)
        raise
    finally:
        listener.close()
    return started


def stop(processes: list, path: str) -> None:
    """End the pool processes and remove their socket."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except Exception:  # noqa: BLE001 - one that will not end is killed
            process.kill()
    if os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
        os.unlink(path)


def main(argv: list[str]) -> None:
    """`hashpool.py FD PARENT TIME_COST MEMORY_COST PARALLELISM`: serve on the inherited listening socket FD."""
    fd, parent, time_cost, memory_cost, parallelism = (int(value) for value in argv)
    listener = socket.socket(fileno=fd)
    listener.setblocking(False)
    try:
        serve(listener, parent, time_cost, memory_cost, parallelism)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
