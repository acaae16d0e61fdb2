"""Incremental vs full base backups on PostgreSQL 17 (summarize_wal = on), side by side
with bare pg_basebackup in the same run, and PITR to one target from full + WAL vs full
+ incremental + the shorter WAL after it.

    .venv/bin/python bench/incremental.py [--scale 50] [--transactions 20000] [--pct 3]

1. `pgbench -i -s SCALE`; `pgvault backup physical --full` and bare `pg_basebackup -Ft
   -Xstream --compress=client-zstd` (time, stored size).
2. a day-like change: UPDATE of PCT % of the accounts (a contiguous range) plus
   TRANSACTIONS pgbench TPC-B-like transactions on those same accounts (a few % of the
   pages change; the WAL is what a busy day on a hot subset writes).
3. `pgvault backup physical --incremental` and bare `pg_basebackup --incremental` against
   the bare full's backup_manifest (time, stored size, ratio to the full).
4. a little more work (a tenth of the transactions), a target time; restore to it twice:
   `restore pitr --backup FULL --to T` (full + all the day's WAL) and `restore pitr --to T`
   (the planner's choice: full + incremental combined + the WAL after the incremental);
   restore time, replay time and a data check (sum of the balances equal).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from common import AMQP, PgCluster, PgvaultEnv, chown_pg, cleanup, workdir
from common import pgvault_for_postgres as pgvault_bin
from physical import du, timed_as_postgres

from tests.pgcluster import as_postgres, pg_bin_for

DAY_SCRIPT = """\\set aid random(1, NACCOUNTS)
\\set bid random(1, 1)
\\set tid random(1, 10)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta,
  CURRENT_TIMESTAMP);
END;
"""


def _balance(bin_dir: Path, socket_dir: str, port: int) -> int:
    proc = as_postgres(
        [str(bin_dir / "psql"), "-h", socket_dir, "-p", str(port), "-U", "postgres", "-Atc",
         "SELECT sum(abalance) FROM pgbench_accounts", "postgres"]
    )  # fmt: skip
    return int(proc.stdout.strip())


def _backup(env: PgvaultEnv, flag: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    out = json.loads(env.cli("backup", "physical", flag, "--json", timeout=7200).stdout)
    return time.perf_counter() - t0, out


def _restore(
    env: PgvaultEnv, bin_dir: Path, base: Path, target: str, *extra: str
) -> tuple[dict[str, Any], int]:
    target_dir = base / f"r-{len(list(base.glob('r-*')))}"
    res = json.loads(
        env.cli(
            "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start",
            "--json", *extra, timeout=7200,
        ).stdout
    )  # fmt: skip
    got = _balance(bin_dir, res["socket_dir"], res["port"])
    as_postgres([str(bin_dir / "pg_ctl"), "-D", str(target_dir), "-m", "fast", "-w", "stop"])
    shutil.rmtree(target_dir)
    return res, got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--transactions", type=int, default=20000)
    parser.add_argument("--pct", type=float, default=3.0)
    args = parser.parse_args()
    bin17 = pg_bin_for(17)
    if bin17 is None:
        raise SystemExit("PostgreSQL 17 not found: run scripts/pg-binaries.sh 17")
    base = workdir("incremental")
    (base / "env").mkdir()
    env = PgvaultEnv(
        base / "env", AMQP, {"type": "local", "path": str(base / "store")}, pgvault_bin()
    )
    try:
        env.cli("init")
        pg = PgCluster(env.base, bin_dir=bin17)
        pg.initdb(
            env.archive_command(),
            {"summarize_wal": "on", "max_wal_size": "'2GB'", "checkpoint_timeout": "'15min'"},
        )
        pg.start()
        env.pg = pg
        env.data["postgres"] = {
            "host": "127.0.0.1", "port": pg.port, "user": "postgres", "bin_dir": str(bin17)
        }  # fmt: skip
        env.write_config()
        libpq = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres"}
        pgbench = str(bin17 / "pgbench")
        t = timed_as_postgres([pgbench, "-i", "-q", "-s", str(args.scale), "postgres"], libpq)
        size = int(pg.one("SELECT pg_database_size('postgres')"))
        print(f"pgbench -i -s {args.scale}: {size / 2**20:.0f} MiB database in {t:.0f}s")

        bare = base / "bare"
        bare.mkdir()
        chown_pg(bare)
        raw = [str(bin17 / "pg_basebackup"), "-Ft", "-Xstream", "--checkpoint=fast",
               "--compress=client-zstd:level=3", "--manifest-checksums=SHA256"]  # fmt: skip
        t_full, full = _backup(env, "--full")
        t_raw_full = timed_as_postgres([*raw, "-D", str(bare / "full")], libpq)
        env.drain()

        accounts = args.scale * 100_000
        n = int(accounts * args.pct / 100)
        lsn0 = pg.one("SELECT pg_current_wal_lsn()")
        pg.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %s", (n,))
        # the day's transactions hit the same PCT % of the accounts (TPC-B-like otherwise):
        # a few % of the pages change, much WAL is written
        script = base / "day.sql"
        script.write_text(DAY_SCRIPT.replace("NACCOUNTS", str(n)))
        script.chmod(0o644)
        half = str(args.transactions // 2)
        timed_as_postgres(
            [pgbench, "-n", "-c", "2", "-t", half, "-f", str(script), "postgres"], libpq
        )
        day_wal = int(pg.one("SELECT pg_current_wal_lsn() - %s::pg_lsn", (lsn0,)))
        print(
            f"day-like change: UPDATE of {n} accounts ({args.pct:g} %) + {args.transactions} "
            f"TPC-B-like transactions on them: {day_wal / 2**20:.0f} MiB of WAL"
        )
        pg.wait_archived(pg.switch_wal(), 600)
        env.drain()

        # pg_basebackup --incremental first waits for the WAL summarizer to reach its
        # start LSN: measured apart, so both incrementals below start from the same state
        flushed = pg.one("SELECT pg_current_wal_flush_lsn()")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 300 and not pg.one(
            "SELECT pending_lsn >= %s::pg_lsn FROM pg_get_wal_summarizer_state()", (flushed,)
        ):
            time.sleep(0.2)
        print(f"WAL summarizer caught up with the day's WAL {time.perf_counter() - t0:.1f} s later")
        t_incr, incr = _backup(env, "--incremental")
        assert incr["incremental"] is True, incr
        t_raw_incr = timed_as_postgres(
            [*raw, "-D", str(bare / "incr"), f"--incremental={bare / 'full' / 'backup_manifest'}"],
            libpq,
        )
        timed_as_postgres(
            [pgbench, "-n", "-c", "2", "-t", str(args.transactions // 20), "postgres"], libpq
        )
        time.sleep(1)
        target = pg.one("SELECT clock_timestamp()").isoformat()
        expected = int(pg.one("SELECT sum(abalance) FROM pgbench_accounts"))
        pg.sql("SELECT txid_current()")
        pg.wait_archived(pg.switch_wal(), 600)
        env.drain()
        listed = env.cli_json("catalog", "list", "--kind", "physical")["artifacts"]
        rows = {r["name"]: r for r in listed}
        s_full = int(rows[full["backup_id"]]["stored_size"] or rows[full["backup_id"]]["size"])
        s_incr = int(rows[incr["backup_id"]]["stored_size"] or rows[incr["backup_id"]]["size"])
        s_raw_full, s_raw_incr = du(bare / "full"), du(bare / "incr")

        print("\nbackups (same cluster, one after the other; stored = compressed bytes):")
        print(f"  {'':34s} {'full':>18s} {'incremental':>22s}   incr/full")
        for label, tf, ti, sf, si in (
            ("pgvault backup physical", t_full, t_incr, s_full, s_incr),
            ("pg_basebackup (bare)", t_raw_full, t_raw_incr, s_raw_full, s_raw_incr),
        ):
            print(
                f"  {label:34s} {tf:6.1f} s {sf / 2**20:7.1f} MiB   {ti:6.1f} s "
                f"{si / 2**20:7.1f} MiB   time {ti / tf:.2f}  size {si / sf:.3f}"
            )
        print(
            f"  pgvault / bare: full {t_full / t_raw_full:.2f}, incremental "
            f"{t_incr / t_raw_incr:.2f} (time)"
        )

        print(f"\nPITR to {target} (same target, WAL from the spool):")
        for label, extra in (
            ("full + WAL (--backup FULL)", ("--backup", full["backup_id"])),
            ("full + incremental + shorter WAL", ()),
        ):
            res, got = _restore(env, bin17, base, target, *extra)
            check = "data ok" if got == expected else f"DATA MISMATCH {got} != {expected}"
            print(
                f"  {label:34s} total {res['duration_s']:7.1f} s   replay "
                f"{res['replay_s']:6.1f} s   {res['segments']:4d} WAL segments "
                f"({res['wal_bytes'] / 2**20:6.1f} MiB stored)   chain {len(res['chain'])}   "
                f"{check}",
                flush=True,
            )
    finally:
        env.close()
        cleanup(base)


if __name__ == "__main__":
    main()
