"""Shared helpers for the benchmarks: a throw-away cluster, pgvault envs, statistics."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.env import PgvaultEnv  # noqa: E402
from tests.pgcluster import PG_BIN, PgCluster, as_postgres, chown_pg  # noqa: E402
from tests.pgvenv import pgvault_for_postgres  # noqa: E402

AMQP = os.environ.get("PGVAULT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

__all__ = [
    "AMQP",
    "PG_BIN",
    "PgCluster",
    "PgvaultEnv",
    "as_postgres",
    "chown_pg",
    "pg_ctl_start_cmd",
    "pgvault_for_postgres",
    "stats",
    "workdir",
]


def workdir(name: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=f"pgvault-bench-{name}-"))
    os.chmod(base, 0o755)
    return base


def cleanup(base: Path) -> None:
    if not os.environ.get("PGVAULT_BENCH_KEEP"):
        shutil.rmtree(base, ignore_errors=True)


def pg_ctl_start_cmd(datadir: Path, log: Path) -> list[str]:
    """`pg_ctl start` of a restored cluster, waiting up to an hour (its recovery replays WAL)."""
    return [str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "3600", "start"]


def start_and_wait(datadir: Path, sock: Path, port: int) -> float:
    """pg_ctl start of a restored cluster, then poll until recovery is over; seconds from
    the start."""
    t0 = time.perf_counter()
    proc = as_postgres(pg_ctl_start_cmd(datadir, sock / "log"))
    if proc.returncode != 0:
        raise SystemExit(
            f"pg_ctl start failed: {proc.stderr}\n{(sock / 'log').read_text()[-3000:]}"
        )
    while True:
        out = as_postgres(
            [
                str(PG_BIN / "psql"),
                "-h",
                str(sock),
                "-p",
                str(port),
                "-U",
                "postgres",
                "-Atc",
                "SELECT pg_is_in_recovery()",
                "postgres",
            ]
        )
        if out.stdout.strip() == "f":
            return time.perf_counter() - t0
        time.sleep(0.1)


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(samples),
        "mean": statistics.fmean(samples),
        "p50": statistics.median(samples),
        "p95": p95,
        "max": ordered[-1],
    }


def fmt_ms(s: dict[str, float]) -> str:
    return (
        f"n={s['n']:<3.0f} mean {s['mean'] * 1000:7.1f} ms  p50 {s['p50'] * 1000:7.1f} ms  "
        f"p95 {s['p95'] * 1000:7.1f} ms  max {s['max'] * 1000:7.1f} ms"
    )
