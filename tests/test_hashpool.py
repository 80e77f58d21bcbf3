"""The hashing pool: Argon2 in processes of their own, answering the workers over a private Unix socket; the
workers hash for themselves whenever it does not answer."""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from argon2 import PasswordHasher, Type

from authsvc import hashpool
from authsvc.services.passwords import Hasher

from .conftest import PASSWORD, TEST_SETTINGS, remember
from .gunicornserver import Gunicorn

CHEAP = (1, 8, 1)  # time cost, memory cost (KiB), parallelism: as the rest of the suite
LOCAL = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)


@pytest.fixture
def pool(tmp_path):
    """A pool of two processes on a socket in the test's folder; the socket's path."""
    path = str(tmp_path / "hash.sock")
    started = hashpool.start(path, 2, *CHEAP)
    yield path
    hashpool.stop(started)


def test_the_pool_verifies_and_hashes(pool):
    stored = LOCAL.hash(PASSWORD)
    assert hashpool.verify(pool, stored, PASSWORD) is True
    assert hashpool.verify(pool, stored, PASSWORD + "x") is False
    assert hashpool.verify(pool, "not a hash at all", PASSWORD) is False
    made = hashpool.hash_password(pool, "pässword with ünïcode")
    assert made.startswith("$argon2id$") and LOCAL.verify(made, "pässword with ünïcode")


def test_only_its_owner_can_open_the_socket(pool):
    assert stat.S_IMODE(os.stat(pool).st_mode) == 0o600


@pytest.mark.parametrize("request_bytes", [
    b"X", b"Q" + b"\x00\x00\x00\x00", b"V\x00\x00\x00\x05ab", b"H" + (10**6).to_bytes(4, "big") + b"xx", b"",
])
def test_a_malformed_request_costs_only_its_connection(pool, request_bytes):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(pool)
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(100)
        except ConnectionResetError:  # closed with the rest of the request unread
            answer = b""
        assert answer in (b"", b"E\x00\x00\x00\x00")
    assert hashpool.verify(pool, LOCAL.hash(PASSWORD), PASSWORD) is True


def test_a_hasher_uses_the_pool_and_hashes_itself_when_it_is_gone(tmp_path, caplog):
    path = str(tmp_path / "hash.sock")
    started = hashpool.start(path, 1, *CHEAP)
    hasher = Hasher(*CHEAP, pool=path)
    stored = hasher.hash(PASSWORD)
    assert hasher.verify(stored, PASSWORD) == (True, None)
    hashpool.stop(started)
    with caplog.at_level(logging.WARNING, logger="authsvc.services.passwords"):
        assert hasher.verify(stored, PASSWORD) == (True, None)
        assert hasher.verify(stored, "wrong password") == (False, None)
        assert hasher.verify(None, PASSWORD) == (False, None)  # the dummy hash, made by the pool earlier
    assert [r for r in caplog.records if "hashing pool did not answer" in r.getMessage()]
    with pytest.raises(hashpool.PoolUnavailable):
        hashpool.verify(path, stored, PASSWORD)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_pool_processes_end_when_their_parent_is_killed(tmp_path):
    path = str(tmp_path / "hash.sock")
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from authsvc import hashpool; "
        "print(hashpool.start(sys.argv[2], 2, 1, 8, 1).process.pid, flush=True); time.sleep(60)"),
        str(Path(__file__).resolve().parent.parent), path], stdout=subprocess.PIPE, text=True)
    supervisor = int(parent.stdout.readline())
    assert _wait_for(lambda: len(_children(supervisor)) == 2)
    pids = [supervisor, *_children(supervisor)]
    assert hashpool.verify(path, LOCAL.hash(PASSWORD), PASSWORD) is True
    parent.kill()
    parent.wait()
    assert _wait_for(lambda: not any(_alive(pid) for pid in pids))


def _lines(err: str, log_format: str) -> list[str]:
    """The pool's messages in what it wrote to stderr, each checked against the format it was asked for."""
    if log_format == "json":
        records = [json.loads(line) for line in err.splitlines() if line.strip()]
        assert all(r["logger"] == "authsvc.hashpool" and r["time"].endswith("Z") for r in records)
        return [r["message"] for r in records]
    return [line.split(" authsvc.hashpool: ", 1)[1] for line in err.splitlines() if " authsvc.hashpool: " in line]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_hashing_process_that_dies_is_replaced(tmp_path, capfd, log_format):
    path = str(tmp_path / "hash.sock")
    # Started here, not in a fixture: its stderr is the one capfd reads.
    pool = hashpool.start(path, 2, *CHEAP, log_format=log_format)
    try:
        supervisor = pool.process.pid
        assert _wait_for(lambda: len(_children(supervisor)) == 2)
        first, second = _children(supervisor)
        os.kill(first, signal.SIGKILL)
        assert _wait_for(lambda: len(set(_children(supervisor)) - {first}) == 2)
        time.sleep(hashpool.QUICK_DEATH_SECONDS)  # the replacement lives: the next death is not "at start"
        os.kill(second, signal.SIGKILL)  # the other original too: only replacements are left to answer
        assert _wait_for(lambda: len(set(_children(supervisor)) - {first, second}) == 2)
        with ThreadPoolExecutor(2) as both:
            answers = list(both.map(lambda _: hashpool.verify(path, LOCAL.hash(PASSWORD), PASSWORD), range(4)))
        assert answers == [True] * 4
        messages = _lines(capfd.readouterr().err, log_format)
        assert messages == [f"hashing process {pid} ended (signal 9); starting another" for pid in (first, second)]
    finally:
        hashpool.stop(pool)


def test_the_pool_gives_up_when_its_processes_die_as_they_start(tmp_path, capfd):
    path = str(tmp_path / "hash.sock")
    pool = hashpool.start(path, 2, *CHEAP)
    try:
        # Killed as fast as they come (an OOM killer, say): after five quick deaths the supervisor closes the
        # socket instead of leaving the workers to wait out their timeout on it.
        def kill_them_all() -> bool:
            for pid in _children(pool.process.pid):
                os.kill(pid, signal.SIGKILL)
            return pool.process.poll() is not None
        assert _wait_for(kill_them_all)
        started = time.monotonic()
        with pytest.raises(hashpool.PoolUnavailable, match="ConnectionRefusedError"):
            hashpool.verify(path, LOCAL.hash(PASSWORD), PASSWORD)
        assert time.monotonic() - started < 1
        assert "giving up: the workers hash for themselves" in _lines(capfd.readouterr().err, "text")[-1]
    finally:
        hashpool.stop(pool)


def test_stopping_the_pool_ends_every_process(tmp_path):
    path = str(tmp_path / "hash.sock")
    pool = hashpool.start(path, 3, *CHEAP)
    assert _wait_for(lambda: len(_children(pool.process.pid)) == 3)
    pids = _children(pool.process.pid)
    hashpool.stop(pool)
    assert pool.process.returncode == 0
    # At once: the supervisor ends its processes and waits for them before it exits (they would notice its
    # absence only within a second).
    assert not any(_alive(pid) for pid in pids)
    assert not os.path.exists(path)


def test_stopping_a_pool_leaves_a_newer_pools_socket_alone(tmp_path):
    # A binary upgrade (USR2): the new master's pool binds the same path while the old one still runs; the old
    # master's exit must not take the new pool's socket with it.
    path = str(tmp_path / "hash.sock")
    old = hashpool.start(path, 1, *CHEAP)
    new = hashpool.start(path, 1, *CHEAP)
    try:
        hashpool.stop(old)
        assert os.path.exists(path)
        assert hashpool.verify(path, LOCAL.hash(PASSWORD), PASSWORD) is True
    finally:
        hashpool.stop(new)
    assert not os.path.exists(path)


def _gunicorn(sqlite_template, tmp_path, **settings) -> Gunicorn:
    """One worker on a copy of the migrated SQLite file, production settings but for `settings`; started."""
    database = tmp_path / "service.db"
    shutil.copyfile(sqlite_template, database)
    return Gunicorn({"AUTHSVC_ENV": "production", "SECRET_KEY": TEST_SETTINGS["SECRET_KEY"],
                     "DATABASE_URL": f"sqlite:///{database}", "INSTANCE_PATH": str(tmp_path / "instance"),
                     "MAIL_WORKER": "false", "RATELIMIT_ENABLED": "false", "ARGON2_TIME_COST": "1",
                     "ARGON2_PARALLELISM": "1", **settings}, workers=1).start()


def _sign_up_and_in(server: Gunicorn, email: str, logins: int = 1) -> dict:
    remember(PASSWORD)
    body = {"email": email, "password": PASSWORD}
    assert requests.post(server.url + "/api/v1/auth/register", json=body, timeout=30).status_code == 201
    for _ in range(logins):
        assert requests.post(server.url + "/api/v1/auth/login", json=body, timeout=30).status_code == 200
    return body


def test_gunicorn_runs_the_pool_and_its_workers_never_hash(sqlite_template, tmp_path):
    # Parameters whose memory would show: 64 MiB a hash.
    temporary = tmp_path / "tmp"  # where gunicorn.conf.py makes the socket's folder
    temporary.mkdir()
    server = _gunicorn(sqlite_template, tmp_path, GUNICORN_HASH_PROCESSES="2", ARGON2_MEMORY_COST="65536",
                       TMPDIR=str(temporary))
    try:
        children = _children(server.process.pid)
        [supervisor] = [pid for pid in children if b"hashpool.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        [worker] = [pid for pid in children if pid != supervisor]
        assert _wait_for(lambda: len(_children(supervisor)) == 2)
        pool_pids = [supervisor, *_children(supervisor)]
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        before = _peak_kb(worker)
        body = _sign_up_and_in(server, "pool@example.com", logins=3)
        wrong = {**body, "password": PASSWORD + "x"}
        assert requests.post(server.url + "/api/v1/auth/login", json=wrong, timeout=30).status_code == 401
        # Hashing in the worker would have added Argon2's 64 MiB to its peak; the first sign-up and sign-in add
        # about 12 MiB of their own (code and caches met for the first time).
        assert _peak_kb(worker) - before < 40 * 1024
        # Stopped as an operator would, through the master alone: its exit hook must end the pool.
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=25)
        assert _wait_for(lambda: not any(_alive(pid) for pid in pool_pids), 2)
        assert not list(temporary.iterdir())  # the socket and its private folder are gone
    finally:
        server.stop()


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def test_gunicorn_serves_without_the_pool_when_it_cannot_start(sqlite_template, tmp_path):
    server = _gunicorn(sqlite_template, tmp_path, GUNICORN_HASH_PROCESSES="1", ARGON2_MEMORY_COST="8",
                       PASSWORD_HASH_SOCKET=str(tmp_path / "no-such-folder" / "hash.sock"))
    try:
        _sign_up_and_in(server, "nopool@example.com")
        log = server.tail(200)
    finally:
        server.stop()
    assert "hashing pool not started" in log and "hashing in the worker" in log


def test_the_pool_never_deletes_a_file_that_is_not_its_socket(tmp_path):
    precious = tmp_path / "authsvc.db"
    precious.write_text("data")
    with pytest.raises(FileExistsError):
        hashpool.start(str(precious), 1, *CHEAP)
    assert precious.read_text() == "data"


def test_a_listener_that_does_not_answer_in_time_is_given_up(tmp_path, monkeypatch):
    path = str(tmp_path / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen(1)  # accepts connections (the kernel does), never answers
        monkeypatch.setattr(hashpool, "TIMEOUT_SECONDS", 0.3)
        started = time.monotonic()
        with pytest.raises(hashpool.PoolUnavailable):
            hashpool.verify(path, LOCAL.hash(PASSWORD), PASSWORD)
        assert time.monotonic() - started < 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user to listen")
def test_a_password_goes_only_to_a_listener_of_our_own_user(tmp_path):
    path = str(tmp_path / "foreign.sock")
    # Another user's process listening on the path, ready to say "match" to anything.
    impostor = subprocess.Popen([sys.executable, "-c", (
        "import os, socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); "
        "os.setgid(65534); os.setuid(65534); s.listen(1); print('ready', flush=True); "
        "c, _ = s.accept(); c.recv(65536); c.sendall(b'1' + bytes(4)); c.close()"), path],
        stdout=subprocess.PIPE, text=True)
    try:
        assert impostor.stdout.readline().strip() == "ready"
        with pytest.raises(hashpool.PoolUnavailable, match="uid 65534"):
            hashpool.verify(path, LOCAL.hash(PASSWORD), "any password at all")
    finally:
        impostor.kill()
        impostor.wait()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


_REHASH_FAULTS = """
import resource, sys
from argon2 import PasswordHasher, Type
from authsvc import hashpool
if sys.argv[1] == "keep":
    hashpool.keep_hash_memory()
hasher = PasswordHasher(time_cost=1, memory_cost=40 * 1024, parallelism=1, type=Type.ID)  # above glibc's 32 MiB
stored = hasher.hash("pw")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
hasher.verify(stored, "pw")
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.parametrize("mode", ["keep", "default"])
def test_a_hashing_process_keeps_a_large_argon2_block_between_hashes(mode):
    """Above 32 MiB glibc maps the block afresh for every hash (a page fault for each 4 KiB) unless told to keep it,
    as the pool's processes and the benchmark's limit do."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    if mode == "default" and "[always]" in _read("/sys/kernel/mm/transparent_hugepage/enabled"):
        pytest.skip("transparent huge pages: a fresh block faults in 2 MiB at a time")
    out = subprocess.run([sys.executable, "-c", _REHASH_FAULTS, mode], capture_output=True, text=True, check=True)
    faults = int(out.stdout)
    if mode == "keep":
        assert faults < 1000
    else:  # the control: the behaviour this guards against is real on this machine
        assert faults > 40 * 1024 // 4 // 2
