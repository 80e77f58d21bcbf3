"""The login ceiling: raw Argon2id verifications per second on every core, with the service's parameters.

One process per core verifies the seeded password against its stored hash (the very hash and parameters the
service checks at login). The processes stay up between slices, idle on a pipe, so the limit can be measured
in short slices interleaved with the login workload (both then see the same background load).
"""
from __future__ import annotations

import multiprocessing as mp
import time

from .common import usable_cpus


def _worker(conn, hash_, password, params):
    from argon2 import PasswordHasher, Type

    from authsvc.hashpool import keep_hash_memory

    keep_hash_memory()  # as the service's hashing processes do: the limit stays the machine's best
    hasher = PasswordHasher(time_cost=params["time_cost"], memory_cost=params["memory_cost"],
                            parallelism=params["parallelism"], type=Type.ID)
    hasher.verify(hash_, password)
    conn.send("ready")
    while True:
        command = conn.recv()
        if command is None:
            return
        start_at, seconds = command
        while time.time() < start_at:
            time.sleep(0.0005)
        count, t0, cpu0 = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - t0) < seconds:
            hasher.verify(hash_, password)
            count += 1
        conn.send((count, elapsed, time.process_time() - cpu0))


class Argon2Pool:
    """`processes` (default: enough to keep every core busy) Argon2id verifiers that run together for a given time
    on demand."""

    def __init__(self, hash_: str, password: str, params: dict, processes: int | None = None):
        # One process per core saturates the cores only when a hash is one thread (parallelism 1). With more
        # lanes, a verification's threads wait for each other at every sync point, and one process per core left
        # 5 to 10 % of the CPU idle on the benchmark machine (m=64 MiB, t=3, p=4): twice as many fill it.
        self.processes = processes or usable_cpus() * (2 if params["parallelism"] > 1 else 1)
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for _ in range(self.processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, hash_, password, params), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        for pipe in self.pipes:
            if not pipe.poll(60) or pipe.recv() != "ready":
                raise RuntimeError("Argon2 verifier did not start")

    def run(self, seconds: float) -> dict:
        """Verify on every process at once for `seconds`; the summed rate and the CPU time per verification."""
        start_at = time.time() + 0.05
        for pipe in self.pipes:
            pipe.send((start_at, seconds))
        results = []
        for pipe in self.pipes:
            if not pipe.poll(seconds + 60):
                raise RuntimeError("Argon2 verifier did not answer")
            results.append(pipe.recv())
        count = sum(c for c, _, _ in results)
        elapsed = max(e for _, e, _ in results)
        cpu = sum(c for _, _, c in results)
        return {"requests": count, "seconds": elapsed, "rps": sum(c / e for c, e, _ in results),
                "cpu_s": cpu, "cpu_ms_per_verify": 1000 * cpu / max(count, 1)}

    def close(self) -> None:
        """Stop the verifier processes."""
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
