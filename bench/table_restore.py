"""One table back as of T: `pgvault restore table` vs a full `pgvault restore pitr
--start` to the same T, and pgBackRest's `restore --db-include` (+ replay) when it is
installed, in one run on one cluster with a small database (the target) and a large one
(pgbench, not the target).

Reports per method the wall time, the bytes written by the extraction (pgvault's own
count; `du` of the restored directory for pgBackRest, whose skipped databases are sparse
zero files too) and a data check: the restored table's rows equal the rows it had at T.

    sudo .venv/bin/python bench/table_restore.py --scale 50
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from common import (
    AMQP,
    PG_BIN,
    PgCluster,
    PgvaultEnv,
    as_postgres,
    chown_pg,
    cleanup,
    pg_ctl_start_cmd,
    workdir,
)
from common import pgvault_for_postgres as pgvault_bin
from physical import timed_as_postgres
from wal_archive import pgbackrest_setup

COUNT = "SELECT count(*)::text || '|' || sum(qty)::text FROM items"


def du_blocks(path: Path) -> int:
    """Bytes allocated on disk (sparse files count for what they really hold)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) * 1024


def psql(sock: str, port: int, db: str, query: str) -> str:
    proc = as_postgres(
        [str(PG_BIN / "psql"), "-h", sock, "-p", str(port), "-U", "postgres", "-Atc", query, db]
    )
    return proc.stdout.strip()


def pg_ctl_stop(datadir: Path) -> None:
    as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"])


def row(label: str, secs: float, extracted: int, check: str) -> None:
    print(f"  {label:44s} {secs:7.1f} s   {extracted / 2**20:8.0f} MiB extracted   {check}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale of the big db")
    parser.add_argument("--transactions", type=int, default=4000)
    args = parser.parse_args()
    base = workdir("table")
    (base / "env").mkdir()
    env = PgvaultEnv(
        base / "env", AMQP, {"type": "local", "path": str(base / "store")}, pgvault_bin()
    )
    rest = shutil.which("pgbackrest") is not None
    conf = base / "pgbackrest" / "pgbackrest.conf"
    try:
        env.cli("init")
        pg = PgCluster(env.base)
        archive = env.archive_command()
        if rest:
            archive += f" && pgbackrest --config={conf} --stanza=bench archive-push %p"
        pg.initdb(archive, {"max_wal_size": "'2GB'"})
        pg.start()
        env.pg = pg
        env.data["postgres"] = {"host": "127.0.0.1", "port": pg.port, "user": "postgres"}
        env.write_config()
        pg.sql("CREATE DATABASE small")
        pg.sql("CREATE DATABASE big")
        pg.sql(
            "CREATE TABLE items (id serial PRIMARY KEY, note text, qty int);"
            "INSERT INTO items(note, qty) SELECT 'item ' || g, g FROM generate_series(1, 20000) g",
            dbname="small",
        )
        libpq = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres"}
        t0 = time.perf_counter()
        timed_as_postgres(
            [str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), "big"], libpq
        )
        sizes = {db: int(pg.one("SELECT pg_database_size(%s)", (db,))) for db in ("small", "big")}
        print(
            f"small: {sizes['small'] / 2**20:.0f} MiB; big (pgbench -s {args.scale}): "
            f"{sizes['big'] / 2**20:.0f} MiB, built in {time.perf_counter() - t0:.0f}s"
        )
        if rest:
            pgbackrest_setup(base, env, "pgbackrest")
        env.start_pipeline()
        env.cli("backup", "physical", timeout=3600)
        if rest:
            timed_as_postgres(
                ["pgbackrest", f"--config={conf}", "--stanza=bench", "--type=full", "backup"]
            )
        timed_as_postgres(
            [str(PG_BIN / "pgbench"), "-n", "-c", "2", "-t", str(args.transactions // 2), "big"],
            libpq,
        )
        pg.sql("UPDATE items SET qty = qty + 1 WHERE id %% 7 = 0", dbname="small")
        time.sleep(1)
        target = pg.one("SELECT clock_timestamp()").isoformat()
        expected = pg.one(COUNT, dbname="small")
        time.sleep(0.5)
        pg.sql("DELETE FROM items WHERE id > 100", dbname="small")  # the loss
        pg.wait_archived(pg.switch_wal(), 600)
        env.wait_for(lambda: all(r["state"] == "verified" for r in env.wal_rows()), 900, "WAL")
        env.stop_pipeline()
        print(f"target {target}")

        print("one table back as of T:")
        t0 = time.perf_counter()
        res = json.loads(
            env.cli(
                "restore", "table", "--db", "small", "--table", "public.items", "--at", target,
                "--target-db", "small", "--target-table", "items_at_t", "--json", timeout=3600,
            ).stdout
        )  # fmt: skip
        t_table = time.perf_counter() - t0
        data_size = int(res["data_size"])  # what a full restore extracts
        got = pg.one(COUNT.replace("items", "items_at_t"), dbname="small")
        order = ("plan", "fetch", "extract", "replay", "dump", "load", "total")
        phases = ", ".join(f"{p} {res['timings'][p + '_s']:.1f}" for p in order)
        row(
            "pgvault restore table",
            t_table,
            res["bytes_extracted"],
            f"rows {'ok' if got == expected else 'DIFFER'}",
        )
        print(f"    phases (s): {phases}")

        target_dir = base / "full"
        t0 = time.perf_counter()
        full = json.loads(
            env.cli(
                "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start",
                "--json", timeout=3600,
            ).stdout
        )  # fmt: skip
        t_full = time.perf_counter() - t0
        got = psql(full["socket_dir"], full["port"], "small", COUNT)
        pg_ctl_stop(target_dir)
        row(
            "pgvault restore pitr --start (whole cluster)",
            t_full,
            data_size,
            f"rows {'ok' if got == expected else 'DIFFER'}",
        )
        shutil.rmtree(target_dir, ignore_errors=True)

        if rest:
            rdir = base / "r-pgbackrest"
            rdir.mkdir(mode=0o700)
            chown_pg(rdir)
            sock = base / "r-sock"
            sock.mkdir()
            chown_pg(sock)
            t0 = time.perf_counter()
            timed_as_postgres(
                [
                    "pgbackrest", f"--config={conf}", "--stanza=bench", f"--pg1-path={rdir}",
                    "--db-include=small", "--type=time", f"--target={target.replace('T', ' ')}",
                    "--target-action=promote", "restore",
                ]
            )  # fmt: skip
            on_disk = du_blocks(rdir)
            port = pg.port + 1
            with (rdir / "postgresql.auto.conf").open("a") as fh:
                fh.write(f"port = {port}\nunix_socket_directories = '{sock}'\narchive_mode = off\n")
            timed_as_postgres(pg_ctl_start_cmd(rdir, sock / "log"))
            while psql(str(sock), port, "postgres", "SELECT pg_is_in_recovery()") != "f":
                time.sleep(0.5)
            got = psql(str(sock), port, "small", COUNT)
            t_rest = time.perf_counter() - t0
            pg_ctl_stop(rdir)
            row(
                "pgbackrest restore --db-include + replay",
                t_rest,
                on_disk,
                f"rows {'ok' if got == expected else 'DIFFER'} (no dump/load step)",
            )
        print(
            f"\n  table / full pitr: time {t_table / t_full:.2f}, "
            f"bytes extracted {res['bytes_extracted'] / max(data_size, 1):.2f}"
        )
    finally:
        env.close()
        cleanup(base)


if __name__ == "__main__":
    main()
