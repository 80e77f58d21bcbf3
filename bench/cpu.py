"""CPU accounting from /proc: what the service, PostgreSQL, wrk and everything else used during a slice."""
from __future__ import annotations

import os
import time

from .procs import children_of, process_tree, stat_fields


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
    fields = stat_fields(pid)
    if fields is None:
        return 0.0, 0.0, 0
    f = [int(v) if v.lstrip("-").isdigit() else 0 for v in fields]
    # fields after the name: 7 minflt, 8 cminflt, 11 utime, 12 stime, 13 cutime, 14 cstime
    user, system, faults = f[11], f[12], f[7]
    if with_children:
        user, system, faults = user + f[13], system + f[14], faults + f[8]
    return (user + system) / CLK_TCK, system / CLK_TCK, faults


def tree_usage(root: int | None, tree: dict[int, list[int]] | None = None) -> tuple[float, float, int]:
    """_proc_cpu summed over a process, its reaped children and its live descendants (gunicorn with its workers and
    the hashing pool's supervisor and processes; the postmaster)."""
    if not root:
        return 0.0, 0.0, 0
    tree = process_tree() if tree is None else tree
    parts, todo = [], [root]
    while todo:
        pid = todo.pop()
        parts.append(_proc_cpu(pid, True))
        todo.extend(children_of(pid, tree))
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def tree_cpu(root: int | None, tree: dict[int, list[int]] | None = None) -> float:
    """CPU seconds used so far by a process and its descendants (0 without one)."""
    return tree_usage(root, tree)[0]


class CpuAccount:
    """Who used the CPU during one slice: the server under test, PostgreSQL, the load generator, everyone else."""

    KEYS = ("wall", "busy", "app", "app_sys", "app_faults", "pool", "db", "loadgen", "bench")

    def __init__(self, app_pids: list[int], postmaster_pid: int | None, pool_pid: int | None = None):
        """`pool_pid`: the hashing pool's supervisor, whose tree is part of the app's and also counted apart."""
        self.app_pids, self.postmaster_pid, self.pool_pid = app_pids, postmaster_pid, pool_pid
        self.start = self._snapshot()

    def _snapshot(self) -> dict:
        total, idle = _cpu_times()
        tree = process_tree()
        app = [tree_usage(pid, tree) for pid in self.app_pids]
        own = os.times()
        return {"wall": time.monotonic(), "busy": (total - idle) / CLK_TCK,
                "app": sum(a[0] for a in app), "app_sys": sum(a[1] for a in app),
                "app_faults": sum(a[2] for a in app), "pool": tree_cpu(self.pool_pid, tree),
                "db": tree_cpu(self.postmaster_pid, tree),
                # wrk (and py-spy) are this process's children, reaped when they end; this process itself
                # (the memory sampler, the orchestration) is measuring, not load, and counts as other work
                "loadgen": own.children_user + own.children_system, "bench": own.user + own.system}

    def finish(self) -> dict:
        """The CPU each part used since this account was opened."""
        end = self._snapshot()
        return {k: end[k] - self.start[k] for k in self.KEYS}


def cpu_summary(raw: dict, requests: int) -> dict:
    """Per-request CPU and cores used, from summed CpuAccount deltas."""
    wall = max(raw["wall"], 1e-9)
    other = max(raw["busy"] - raw["app"] - raw["db"] - raw["loadgen"], 0.0)
    per = lambda v: 1000 * v / max(requests, 1)  # noqa: E731
    return {"app_ms_per_req": per(raw["app"]), "pool_ms_per_req": per(raw.get("pool", 0.0)),
            "db_ms_per_req": per(raw["db"]),
            "loadgen_ms_per_req": per(raw["loadgen"]), "bench_ms_per_req": per(raw["bench"]),
            "total_ms_per_req": per(raw["app"] + raw["db"] + raw["loadgen"]),
            "app_kernel_share": raw["app_sys"] / raw["app"] if raw["app"] else 0.0,
            "app_minor_faults_per_req": raw["app_faults"] / max(requests, 1),
            "app_cores": raw["app"] / wall, "db_cores": raw["db"] / wall, "loadgen_cores": raw["loadgen"] / wall,
            "bench_cores": raw["bench"] / wall,
            "other_cores": other / wall}


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of the machine's CPU that was busy over `seconds` (before a workload: everyone else's load)."""
    total0, idle0 = _cpu_times()
    time.sleep(seconds)
    total1, idle1 = _cpu_times()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)
