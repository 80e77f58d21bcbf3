"""The results: each workload against its limit and target, as a table, in the terminal and in docs."""
from __future__ import annotations


from .common import DOC, MEMORY_LIMIT_MB, P99_LIMIT_MS, ROOT, log


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
    """Mark each workload pass or fail against its targets; store the summary in `results`."""
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
    """The results as markdown tables and notes (the terminal and docs/performance.md)."""
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
           "CPU time per request, summed over the measured slices (the service's gunicorn master, workers and "
           "hashing pool, every PostgreSQL process, wrk), and the cores other processes on the machine (this bench's "
           "own included) kept busy meanwhile:", "",
           "| workload | service | PostgreSQL | wrk | total | limit's total | other work (cores) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        res = results["workloads"][r["workload"]]
        c, lim = res["cpu"], res["limit"]
        lim_total = (f"{lim['cpu_ms_per_verify']:.2f} ms (Argon2id)" if res["limit_kind"] == "argon2"
                     else f"{lim['cpu']['total_ms_per_req']:.2f} ms (hello)")
        pool = f" ({c['pool_ms_per_req']:.2f} ms in the hashing pool)" if c.get("pool_ms_per_req") else ""
        out.append(f"| {r['label']} | {c['app_ms_per_req']:.2f} ms{pool} | {c['db_ms_per_req']:.2f} ms | "
                   f"{c['loadgen_ms_per_req']:.2f} ms | {c['total_ms_per_req']:.2f} ms | {lim_total} | "
                   f"{c['other_cores']:.2f} |")
    out.append("")
    p = results.get("argon2_params")
    if p and "argon2" in results["limits"]:
        out.append(f"- Login's limit: raw Argon2id verifications (m={p['memory_cost']} KiB, t={p['time_cost']}, "
                   f"p={p['parallelism']}, the service's settings) in {_verifiers(results)}.")
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
               f"{mem.get('master_hwm_mb', 0):.1f} MB"
               + (f"; hashing pool ({mem['hash_pool_processes']} processes, counted in the service's CPU) "
                  f"{mem['hash_pool_peak_hwm_mb']:.1f} MB each at most." if mem.get("hash_pool_processes") else "."))
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
    """Print the markdown report."""
    print()
    print(markdown(results))
    print()


def _verifiers(results: dict) -> str:
    """How many verifier processes the login limit ran, and why that many."""
    cores = results["machine"]["cores"]
    processes = results.get("argon2_processes", cores)  # runs before the count was recorded: one per core
    if processes == cores:
        return f"{processes} processes, one per core"
    return f"{processes} processes on {cores} cores (one per core leaves CPU idle when a hash has several lanes)"


def update_doc(results: dict, command: str) -> None:
    """Replace the results block of docs/performance.md with this run."""
    text = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
    block = f"{start}\nRun of {results['started_at']}: `{command}`\n\n{markdown(results)}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    DOC.write_text(text)
    log(f"updated {DOC.relative_to(ROOT)}")
