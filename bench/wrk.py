"""Driving load with wrk and its Lua scripts, and adding up the slices of one workload."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from .common import LUA
from .cpu import CpuAccount, cpu_summary
from .procs import Processes


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
            """The p-quantile of the merged latency distributions, in milliseconds."""
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
