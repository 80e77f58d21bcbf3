"""A throwaway PostgreSQL for the benchmark with the server's default durability.

It reuses tests/pgserver.py (loaded by path, without importing the test package) for initdb, start and stop,
then turns durability back on: that helper switches fsync, synchronous_commit and full_page_writes off
because test data is disposable, but a benchmark must pay what production pays for every commit. The
settings go through ALTER SYSTEM (postgresql.auto.conf wins over postgresql.conf) and a reload, which is
enough for all three; a CHECKPOINT then flushes what initdb --no-sync left unflushed.
"""
from __future__ import annotations

import importlib.util

import psycopg

from .common import ROOT

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "wal_sync_method": None}


def _pgserver_module():
    spec = importlib.util.spec_from_file_location("authsvc_bench_pgserver", ROOT / "tests" / "pgserver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pgserver = _pgserver_module()


class DurablePostgres(pgserver.PostgresServer):
    """tests/pgserver.PostgresServer with fsync, synchronous_commit and full_page_writes on."""

    def start(self) -> None:
        """initdb, start, then restore the durability defaults and check that they hold."""
        super().start()
        with psycopg.connect(self.url(), autocommit=True) as conn:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {name} = on")
            conn.execute("SELECT pg_reload_conf()")
        with psycopg.connect(self.url(), autocommit=True) as conn:  # a new backend sees the reloaded file
            settings = self.settings(conn)
            wrong = {k: v for k, v in settings.items() if k != "wal_sync_method" and v != "on"}
            if wrong:
                raise RuntimeError(f"PostgreSQL durability settings did not take: {wrong}")
            conn.execute("CHECKPOINT")

    @staticmethod
    def settings(conn) -> dict:
        """The durability-related settings as the server reports them."""
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in DURABLE}

    def version(self) -> str:
        """`SHOW server_version`."""
        with psycopg.connect(self.url()) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
