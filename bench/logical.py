"""Logical backup and restore cost: `pgvault backup logical` vs bare `pg_dump -Fc`, and
`pgvault restore logical --jobs 2` vs bare `createdb` + `pg_restore -j 2`, side by side
and interleaved in one run, on a pgbench database (scale 50 by default) and on two small
schemas where the fixed cost shows: a ~50-table application schema (Strapi-like) and a
~400-table one with views, functions and a partitioned table (regression-like).

    .venv/bin/python bench/logical.py [--scale 50] [--dump-rounds 5] [--small-rounds 7]
        [--restore-rounds 2] [--also-level 1] [--before-src DIR]

--before-src DIR times a second pgvault source tree (e.g. `git archive main pgvault |
tar -x -C DIR`) in the same rounds, so before and after meet the same load.

pgvault does more than the bare tools: it exports a snapshot, counts every table's rows
in it (beside pg_dump with its backend at nice 19 when that backend provably runs on
this machine, else after pg_dump; in the same snapshot), checks the archive (table of
contents, every data block in place and complete), hashes and fsyncs it, writes the
manifest and records the run in the catalog; on restore it copies the dump out of the
spool while checking its sha256, restores into a staging database, counts every table
and renames it into place. The ratio and the added seconds show what that costs.
pgvault's modules are byte-compiled first, as an installed package's are.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import AMQP, PG_BIN, REPO, PgCluster, PgvaultEnv, cleanup, stats, workdir
from common import pgvault_for_postgres as pg_bin_for_postgres

BIG = "bench"
APP = "app50"
MANY = "reg400"


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


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def app_schema(tables: int) -> str:
    """An application schema: serial keys, text, jsonb, timestamps, a foreign key to the
    previous table, an index on each, a few hundred rows in most."""
    out = []
    for i in range(tables):
        fk = f", parent_id int REFERENCES t{i - 1}(id)" if i else ""
        out.append(
            f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL, "
            f"created_at timestamptz DEFAULT now(), payload jsonb, flag boolean{fk});"
            f"CREATE INDEX t{i}_name ON t{i}(name);"
            f"INSERT INTO t{i} (name, payload{', parent_id' if i else ''}) "
            f"SELECT 'n' || g, jsonb_build_object('g', g){', 1' if i else ''} "
            f"FROM generate_series(1, {1 + (i * 37) % 300}) g;"
        )
    return "\n".join(out)


def many_schema(tables: int) -> str:
    """Regression-like: many small tables, views, functions, a partitioned table."""
    out = [app_schema(tables)]
    out += [
        f"CREATE VIEW v{i} AS SELECT id, name FROM t{i} WHERE flag;" for i in range(0, tables, 4)
    ]
    out += [
        f"CREATE FUNCTION f{i}(x int) RETURNS int LANGUAGE plpgsql AS "
        f"$$BEGIN RETURN x + {i}; END$$;"
        for i in range(50)
    ]
    out.append("CREATE TABLE meas (k int, v text) PARTITION BY RANGE (k);")
    out += [
        f"CREATE TABLE meas_{i} PARTITION OF meas FOR VALUES FROM ({i * 100}) TO ({i * 100 + 100});"
        for i in range(20)
    ]
    out.append("INSERT INTO meas SELECT g, 'x' FROM generate_series(0, 1999) g;")
    return "\n".join(out)


def fmt(samples: list[float]) -> str:
    s = stats(samples)
    return f"n={s['n']:.0f}  mean {s['mean']:6.2f} s  p50 {s['p50']:6.2f} s  max {s['max']:6.2f} s"


def interleave(
    pg: PgCluster, contenders: dict[str, Callable[[], float]], rounds: int
) -> dict[str, list[float]]:
    """Each round runs every contender once, the order rotated round by round."""
    names = list(contenders)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            settle(pg)
            out[name].append(contenders[name]())
    return out


def report(title: str, samples: dict[str, list[float]], bare: str, target: str) -> None:
    print(f"\n{title}")
    base = stats(samples[bare])
    for name, values in samples.items():
        s = stats(values)
        extra = ""
        if name != bare:
            extra = (
                f"  ratio mean {s['mean'] / base['mean']:.2f}x p50 {s['p50'] / base['p50']:.2f}x"
                f"  +{s['mean'] - base['mean']:.2f} s mean, +{s['p50'] - base['p50']:.2f} s p50"
            )
        print(f"  {name:<40} {fmt(values)}{extra}")
    print(f"  target: {target}")


def phase_means(phases: list[dict[str, float]]) -> str:
    """Mean seconds of each `*_s` timing; other keys are flags (count_niced: the big
    tables were counted beside pg_dump), shown as in how many of the runs they held."""
    keys = sorted({k for p in phases for k in p})
    parts = []
    for k in keys:
        total = sum(p.get(k, 0) for p in phases)
        if k.endswith("_s"):
            parts.append(f"{k} {total / len(phases):.3f} s")
        else:
            parts.append(f"{k} {int(total)}/{len(phases)} runs")
    return ", ".join(parts)


class Bench:
    def __init__(self, env: PgvaultEnv, pg: PgCluster, libpq: dict[str, str], before: str | None):
        self.env, self.pg, self.libpq, self.before = env, pg, libpq, before
        self.phases: list[dict[str, float]] = []

    def pgvault(self, args: list[str], *, before: bool = False, level: int = 6) -> float:
        extra = {"PGVAULT_POSTGRES__DUMP_COMPRESSION": str(level)}
        # `python -m pgvault` imports the package of its working directory first
        cwd = self.before if before else str(REPO)
        cmd = [sys.executable, "-m", "pgvault", "--config", str(self.env.config_path), *args]
        start = time.perf_counter()
        proc = subprocess.run(
            [*cmd, "--json"], capture_output=True, text=True, cwd=cwd, env=dict(os.environ, **extra)
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"pgvault {' '.join(args)} ({cwd}) failed: {proc.stderr.strip()[-400:]}")
        out = json.loads(proc.stdout)
        if not before and "backups" in out:
            self.phases.append(out["backups"][0].get("timings") or {})
        return elapsed

    def backup(self, db: str, rounds: int, level: int = 6) -> None:
        out = self.env.base / "bare.dump"
        pg_dump = [str(PG_BIN / "pg_dump"), "-Fc", f"-Z{level}", "-f", str(out), db]
        contenders: dict[str, Callable[[], float]] = {
            "pgvault backup logical": lambda: self.pgvault(
                ["backup", "logical", "--db", db], level=level
            ),
            f"pg_dump -Fc -Z{level}": lambda: run(pg_dump, self.libpq),
        }
        if self.before:
            contenders["pgvault backup logical (before)"] = lambda: self.pgvault(
                ["backup", "logical", "--db", db], before=True, level=level
            )
        if db == APP:  # the floor of the fixed cost: the interpreter and those imports
            contenders["python + the command's imports"] = lambda: run(
                [sys.executable, "-c", IMPORTS]
            )
        self.phases = []
        samples = interleave(self.pg, contenders, rounds)
        size = self.pg.one(f"SELECT pg_size_pretty(pg_database_size('{db}'))")
        tables = self.pg.one(
            "SELECT count(*) FROM pg_class WHERE relkind IN ('r','p') "
            "AND relnamespace = 'public'::regnamespace",
            dbname=db,
        )
        report(
            f"backup of {db} ({size}, {tables} tables), compression level {level}, "
            f"{rounds} rounds, rotating order ({load()}):",
            samples,
            f"pg_dump -Fc -Z{level}",
            "<= 1.10x pg_dump (big), <= pg_dump + 0.3 s (small)",
        )
        if self.phases:
            print(f"  pgvault phases (mean): {phase_means(self.phases)}; the rest is start-up, "
                  "catalog, fsync")  # fmt: skip

    def restore(self, db: str, rounds: int) -> None:
        out = self.env.base / "bare.dump"
        run([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(out), db], self.libpq)
        self.env.cli("backup", "logical", "--db", db, timeout=1800)
        self.env.drain()

        def bare() -> float:
            start = time.perf_counter()
            run([str(PG_BIN / "createdb"), "bare_copy"], self.libpq)
            run([str(PG_BIN / "pg_restore"), "-j", "2", "-d", "bare_copy", str(out)], self.libpq)
            elapsed = time.perf_counter() - start
            self.pg.sql("DROP DATABASE bare_copy")
            return elapsed

        def ours(before: bool = False) -> float:
            args = ["restore", "logical", "--db", db, "--target-db", "ours_copy", "--jobs", "2"]
            elapsed = self.pgvault(args, before=before)
            self.pg.sql("DROP DATABASE ours_copy")
            return elapsed

        contenders: dict[str, Callable[[], float]] = {
            "pgvault restore logical --jobs 2": ours,
            "createdb + pg_restore -j 2": bare,
        }
        if self.before:
            contenders["pgvault restore logical (before)"] = lambda: ours(before=True)
        interleave(self.pg, contenders, 1)  # untimed warm-up
        samples = interleave(self.pg, contenders, rounds)
        report(
            f"restore of {db} ({rounds} rounds after a warm-up, rotating order, {load()}):",
            samples,
            "createdb + pg_restore -j 2",
            "as close to pg_restore as the row-count proof allows",
        )


# what `backup logical` imports before pg_dump starts (pgvault.producers.logical_cmd's
# path; the manifest's models, the archive reader and the run record are imported while
# pg_dump runs): the floor of its fixed cost on this machine, before any connection or file
IMPORTS = (
    "import pgvault.config, pgvault.identity, pgvault.log, pgvault.catalog, "
    "pgvault.producers.logical"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--dump-rounds", type=int, default=5)
    parser.add_argument("--small-rounds", type=int, default=7)
    parser.add_argument("--restore-rounds", type=int, default=2)
    parser.add_argument("--small-tables", type=int, default=50)
    parser.add_argument("--many-tables", type=int, default=400)
    parser.add_argument("--also-level", type=int, action="append", default=[])
    parser.add_argument("--before-src", help="Also time the pgvault package in this directory.")
    args = parser.parse_args()
    compileall.compile_dir(REPO / "pgvault", quiet=1)
    before = str(Path(args.before_src).resolve()) if args.before_src else None
    if before:
        compileall.compile_dir(Path(before) / "pgvault", quiet=1)
        check = [sys.executable, "-c", "import pgvault; print(pgvault.__file__)"]
        where = subprocess.run(check, cwd=before, capture_output=True, text=True).stdout
        assert where.startswith(before), f"--before-src {before} is not what runs: {where}"
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
        env.data["postgres"] = {"host": "127.0.0.1", "port": pg.port, "user": "postgres"}
        env.write_config()
        env.cli("init")
        libpq = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(pg.port), PGUSER="postgres")
        for db, body in (
            (APP, app_schema(args.small_tables)),
            (MANY, many_schema(args.many_tables)),
        ):
            pg.sql(f"CREATE DATABASE {db}")
            with pg.connect(db) as conn:
                conn.execute(body)
        pg.sql(f"CREATE DATABASE {BIG}")
        t = run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), BIG], libpq)
        print(f"pgbench -i -s {args.scale}: {t:.1f} s; PostgreSQL {pg.one('SHOW server_version')}")
        print(f"start: {load()}")
        bench = Bench(env, pg, libpq, before)
        for db in (APP, MANY):
            bench.backup(db, args.small_rounds)
        for level in [6, *args.also_level]:
            bench.backup(BIG, args.dump_rounds, level)
        for db in (APP, BIG):
            bench.restore(db, args.restore_rounds)
        print(f"\nend: {load()}")
    finally:
        env.close()
        cleanup(base)


if __name__ == "__main__":
    main()
