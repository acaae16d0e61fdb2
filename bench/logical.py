"""Logical backup and restore cost: `pgvault backup logical` vs bare `pg_dump -Fc`, and
`pgvault restore logical --jobs 2` vs bare `createdb` + `pg_restore -j 2`, on the same
pgbench database (scale 50 by default), side by side and interleaved in one run.

    .venv/bin/python bench/logical.py [--scale 50] [--dump-rounds 3] [--restore-rounds 2]
                                      [--also-level 1]

pgvault does more than the bare tools: it exports a snapshot and counts every table's
rows in it (in parallel with pg_dump), checks the dump with `pg_restore --list`, hashes
and fsyncs it and writes the manifest; on restore it copies the dump out of the spool
while checking its sha256, restores into a staging database, counts every table and
renames it into place. The ratio shows what that costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import AMQP, PG_BIN, PgCluster, PgvaultEnv, cleanup, stats, workdir
from common import pgvault_for_postgres as pg_bin_for_postgres

DB = "bench"


def run(args: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} failed: {proc.stderr.strip()[-400:]}")
    return elapsed


def settle(pg: PgCluster) -> None:
    """Same start for every timed command: no dirty buffers, no pending writeback."""
    pg.sql("CHECKPOINT")
    os.sync()


def fmt_s(samples: list[float]) -> str:
    s = stats(samples)
    return f"n={s['n']:.0f}  mean {s['mean']:6.2f} s  p50 {s['p50']:6.2f} s  max {s['max']:6.2f} s"


def report(title: str, ours: list[float], theirs: list[float], names: tuple[str, str]) -> None:
    s_ours, s_theirs = stats(ours), stats(theirs)
    print(f"\n{title}")
    print(f"  {names[0]:<44} {fmt_s(ours)}")
    print(f"  {names[1]:<44} {fmt_s(theirs)}")
    mean = (s_ours["mean"] / s_theirs["mean"] - 1) * 100
    p50 = (s_ours["p50"] / s_theirs["p50"] - 1) * 100
    print(f"  {'overhead':<44} mean {mean:+.1f} %, p50 {p50:+.1f} %  (target <= +10 %)")


def bench_backup(
    env: PgvaultEnv, pg: PgCluster, libpq: dict[str, str], out: Path, *, level: int, rounds: int
) -> None:
    """pgvault backup logical vs pg_dump -Fc at the same compression level, interleaved."""
    ours, bare, phase = [], [], []
    override = {"PGVAULT_POSTGRES__DUMP_COMPRESSION": str(level)}
    for i in range(rounds):
        for tool in ["pgvault", "bare"] if i % 2 == 0 else ["bare", "pgvault"]:
            settle(pg)
            if tool == "bare":
                out.unlink(missing_ok=True)
                cmd = [str(PG_BIN / "pg_dump"), "-Fc", f"-Z{level}", "-f", str(out), DB]
                bare.append(run(cmd, libpq))
            else:
                start = time.perf_counter()
                proc = env.cli(
                    "backup", "logical", "--db", DB, "--json", timeout=1800, env=override
                )
                ours.append(time.perf_counter() - start)
                phase.append(json.loads(proc.stdout)["backups"][0]["duration_s"])
    default = " (pg_dump's default)" if level == 6 else ""
    report(
        f"backup of {DB}, gzip level {level}{default}, {rounds} rounds, alternating order:",
        ours,
        bare,
        (f"pgvault backup logical (dump_compression={level})", f"pg_dump -Fc -Z{level} -f FILE"),
    )
    print(
        f"  {'pgvault: snapshot + pg_dump + row counts':<44} {fmt_s(phase)}"
        "  (the rest: interpreter start, checks, sha256, fsync, catalog)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--dump-rounds", type=int, default=3)
    parser.add_argument("--restore-rounds", type=int, default=2)
    parser.add_argument(
        "--also-level",
        type=int,
        action="append",
        default=[],
        help="Also compare at this compression level (repeatable), e.g. 1.",
    )
    args = parser.parse_args()
    base = workdir("logical")
    (base / "env").mkdir()
    env = PgvaultEnv(
        base / "env", AMQP, {"type": "local", "path": str(base / "store")}, pg_bin_for_postgres()
    )
    pg = PgCluster(base / "env")
    try:
        pg.initdb(None, {"shared_buffers": "256MB", "max_wal_size": "4GB"})
        pg.start()
        env.pg = pg
        env.data["postgres"] = {
            "host": "127.0.0.1",
            "port": pg.port,
            "user": "postgres",
            "databases": [DB],
        }
        env.write_config()
        env.cli("init")
        libpq = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(pg.port), PGUSER="postgres")
        pg.sql(f"CREATE DATABASE {DB}")
        t = run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), DB], libpq)
        size = pg.one(f"SELECT pg_size_pretty(pg_database_size('{DB}'))")
        print(f"pgbench -i -s {args.scale}: {t:.1f} s, database size {size}")
        print(f"PostgreSQL {pg.one('SHOW server_version')}")

        out = base / "bare.dump"
        for level in [6, *args.also_level]:
            bench_backup(env, pg, libpq, out, level=level, rounds=args.dump_rounds)
        dumps = sorted((env.spool / "logical" / DB).iterdir())
        print(
            f"  dump sizes (last level): pgvault "
            f"{dumps[-1].joinpath(DB + '.dump').stat().st_size >> 20} MiB, "
            f"bare {out.stat().st_size >> 20} MiB"
        )
        out.unlink()
        run([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(out), DB], libpq)  # default level
        # restore the default-level dump; pgvault restores the newest catalogued one
        env.cli("backup", "logical", "--db", DB, timeout=1800)

        env.drain(rounds=1)
        ours_restore, bare_restore = [], []
        timings = []
        for i in range(-1, args.restore_rounds):  # round -1: untimed warm-up of both
            pair = ["pgvault", "bare"] if i % 2 == 0 else ["bare", "pgvault"]
            for tool in pair:
                settle(pg)
                if tool == "bare":
                    start = time.perf_counter()
                    run([str(PG_BIN / "createdb"), "bare_copy"], libpq)
                    run([str(PG_BIN / "pg_restore"), "-j", "2", "-d", "bare_copy", str(out)], libpq)
                    if i >= 0:
                        bare_restore.append(time.perf_counter() - start)
                    pg.sql("DROP DATABASE bare_copy")
                else:
                    start = time.perf_counter()
                    proc = env.cli(
                        "restore", "logical", "--db", DB, "--target-db", "ours_copy",
                        "--jobs", "2", "--json", timeout=1800,
                    )  # fmt: skip
                    if i >= 0:
                        ours_restore.append(time.perf_counter() - start)
                        timings.append(json.loads(proc.stdout)["timings"])
                    pg.sql("DROP DATABASE ours_copy")
        report(
            f"restore of {DB} ({args.restore_rounds} rounds after a warm-up, alternating order):",
            ours_restore,
            bare_restore,
            ("pgvault restore logical --jobs 2", "createdb + pg_restore -j 2"),
        )
        for t in timings:
            print("  pgvault phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
    finally:
        env.close()
        cleanup(base)


if __name__ == "__main__":
    main()
