"""Row counts and the archive check of `backup logical`, against real PostgreSQL.

The counts are taken after pg_dump has finished, in the transaction that exported the
dump's snapshot: they must be exact for partitions, inheritance, empty tables and odd
names, and must not see rows committed while the dump ran. The archive is checked by
reading it (pgvault.pgdumpfile): these tests hold that reader to pg_restore's own listing
for every pg_dump version available, and show that it refuses truncated, overwritten and
pipe-written archives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pgvault import pgdumpfile, pgtables, pgtoc
from pgvault.pgtables import TableRef
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.pgcluster import PG_BIN, PgCluster, pg_bin_for

pytestmark = pytest.mark.slow

DB = "counts"
ODD_SCHEMA = 'odd "sch" ü'
ODD_TABLE = 'We ird"Name.x'
SCHEMA = """
CREATE TABLE plain (id int PRIMARY KEY, v text);
INSERT INTO plain SELECT g, 'v' || g FROM generate_series(1, 1234) g;
CREATE TABLE empty_one (id int);
CREATE TABLE meas (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE meas_a PARTITION OF meas FOR VALUES FROM (0) TO (100);
CREATE TABLE meas_b PARTITION OF meas FOR VALUES FROM (100) TO (1000)
  PARTITION BY RANGE (k);
CREATE TABLE meas_b1 PARTITION OF meas_b FOR VALUES FROM (100) TO (500);
CREATE TABLE meas_b2 PARTITION OF meas_b FOR VALUES FROM (500) TO (1000);
CREATE TABLE meas_empty PARTITION OF meas FOR VALUES FROM (1000) TO (2000);
INSERT INTO meas SELECT g, 'x' FROM generate_series(0, 999) g;
CREATE TABLE animal (name text);
CREATE TABLE dog (barks boolean) INHERITS (animal);
INSERT INTO animal VALUES ('generic'), ('thing');
INSERT INTO dog SELECT 'rex' || g, true FROM generate_series(1, 17) g;
CREATE SCHEMA "odd ""sch"" ü";
CREATE TABLE "odd ""sch"" ü"."We ird""Name.x" ("a b" int);
INSERT INTO "odd ""sch"" ü"."We ird""Name.x" SELECT generate_series(1, 7);
CREATE TABLE "UPPER" (x int);
INSERT INTO "UPPER" VALUES (1), (2), (3);
CREATE TABLE grows (id int);
INSERT INTO grows SELECT generate_series(1, 5);
CREATE TABLE big (id int, pad text);
INSERT INTO big SELECT g, repeat('x', 40) FROM generate_series(1, 150000) g;
"""
EXPECTED = {
    ("public", "plain"): 1234,
    ("public", "empty_one"): 0,
    ("public", "meas"): 0,
    ("public", "meas_a"): 100,
    ("public", "meas_b"): 0,
    ("public", "meas_b1"): 400,
    ("public", "meas_b2"): 500,
    ("public", "meas_empty"): 0,
    ("public", "animal"): 2,
    ("public", "dog"): 17,
    (ODD_SCHEMA, ODD_TABLE): 7,
    ("public", "UPPER"): 3,
    ("public", "grows"): 5,
    ("public", "big"): 150000,  # over pgtables.BIG_TABLE: counted after pg_dump
}


def make_db(pg: PgCluster) -> None:
    pg.sql(f"CREATE DATABASE {DB}")
    with pg.connect(DB) as conn:
        conn.execute(SCHEMA)


@pytest.fixture
def counts_env(make_env: EnvFactory) -> tuple[PgvaultEnv, PgCluster]:
    env = make_env("local")
    env.cli("init")
    pg = PgCluster(env.base)
    pg.initdb(None)
    pg.start()
    env.pg = pg
    make_db(pg)
    env.data["postgres"] = {"host": "127.0.0.1", "port": pg.port, "user": "postgres"}
    env.write_config()
    return env, pg


def wrapped_bin(where: Path, before: str = "", after: str = "") -> Path:
    """A bin_dir whose pg_dump runs shell lines before and after the real one (the real
    pg_dump's --version answers for it); pg_restore is the real one."""
    where.mkdir()
    (where / "pg_dump").write_text(
        "#!/bin/sh\n"
        f'[ "$1" = "--version" ] && exec {PG_BIN}/pg_dump --version\n'
        f"{before}\n"
        f'{PG_BIN}/pg_dump "$@" || exit $?\n'
        f"{after}\n"
    )
    (where / "pg_dump").chmod(0o755)
    (where / "pg_restore").symlink_to(PG_BIN / "pg_restore")
    return where


def manifest_of(env: PgvaultEnv, backup: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(backup["path"]) / "manifest.json").read_text())
    return data


def test_counts_are_exact_and_at_the_dump_snapshot(
    counts_env: tuple[PgvaultEnv, PgCluster], workdir: Path
) -> None:
    env, pg = counts_env
    assert pg.one("SELECT pg_relation_size('big')", dbname=DB) >= pgtables.BIG_TABLE
    # rows committed after the snapshot was exported, before pg_dump starts reading:
    # neither the dump nor the counts (taken after pg_dump, in the snapshot) may see them
    insert = (
        f"{PG_BIN}/psql -q -X -v ON_ERROR_STOP=1 "
        "-c 'INSERT INTO grows SELECT generate_series(100, 1099)' "
        "-c 'INSERT INTO big SELECT generate_series(1, 1000)'"
    )
    # and a TRUNCATE (not MVCC-safe) of the big table queued as pg_dump ends: the big
    # table is counted after pg_dump, under a lock taken before it, so the TRUNCATE must
    # wait for the count (without the lock the count would see the table empty)
    # (its output away from pg_dump's pipes, which pgvault reads to the end)
    truncate = f"{PG_BIN}/psql -q -X -c 'TRUNCATE big' >/dev/null 2>&1 </dev/null & sleep 1"
    env.data["postgres"]["bin_dir"] = str(
        wrapped_bin(workdir / "bin", before=insert, after=truncate)
    )
    env.write_config()
    out = env.cli_json("backup", "logical", "--db", DB)
    assert out["ok"], out
    backup = out["backups"][0]
    manifest = manifest_of(env, backup)
    counts = {(t["schema"], t["name"]): t["rows"] for t in manifest["tables"]}
    assert counts == EXPECTED
    assert backup["rows"] == sum(EXPECTED.values()) == manifest["row_count"]
    assert set(backup["timings"]) == {
        "dump_s",
        "count_small_s",
        "count_big_during_s",
        "count_niced",
        "count_s",
        "check_s",
    }
    assert pg.one("SELECT count(*) FROM grows", dbname=DB) == 1005  # the inserts did happen
    deadline = time.monotonic() + 60
    while pg.one("SELECT count(*) FROM big", dbname=DB) and time.monotonic() < deadline:
        time.sleep(0.2)  # the TRUNCATE went through once the backup's transaction ended
    assert pg.one("SELECT count(*) FROM big", dbname=DB) == 0

    # the dump holds the snapshot's rows too: a restore proves its counts against these
    env.data["postgres"]["bin_dir"] = ""
    env.write_config()
    env.drain()
    report = env.cli_json("restore", "logical", "--db", DB, "--target-db", "counts_copy")
    assert report["ok"], report
    restored = {(t["schema"], t["name"]): t["restored"] for t in report["tables"]}
    assert restored == EXPECTED
    trees = {t["name"]: (t["tree_restored"], t["tree_expected"]) for t in report["tables"]}
    assert trees["meas"] == (1000, 1000) and trees["meas_b"] == (900, 900)
    assert pg.one("SELECT count(*) FROM grows", dbname="counts_copy") == 5
    assert pg.one("SELECT count(*) FROM big", dbname="counts_copy") == 150000


def copy_rows(dump: Path, table: str) -> int:
    """Rows of `table`'s data in a custom-format archive (its COPY lines)."""
    text = subprocess.run(
        [str(PG_BIN / "pg_restore"), "--data-only", "--table", table, "--file", "-", str(dump)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    lines = text.split(f"COPY public.{table} ", 1)[1].split("\n\\.\n", 1)[0].splitlines()
    return len(lines) - 1  # the COPY line itself


@pytest.mark.parametrize("user", ["postgres", "plain"])
def test_big_tables_counted_beside_pg_dump_stay_exact(
    counts_env: tuple[PgvaultEnv, PgCluster], workdir: Path, user: str
) -> None:
    """Rows go into the big table all through pg_dump. As a superuser on the server's own
    machine (the tests run as root) the big table is counted beside pg_dump, its backend
    at nice 19; as a role that may not read data_directory, after pg_dump (the locality
    of the backend is not provable). Either way the count is the dump's snapshot and the
    dump holds exactly that many rows."""
    env, pg = counts_env
    pg.sql("CREATE ROLE plain LOGIN; GRANT pg_read_all_data TO plain", dbname=DB)
    pg.sql("GRANT INSERT ON big TO plain", dbname=DB)
    inserts = (
        "(for i in $(seq 30); do "
        f"{PG_BIN}/psql -q -X -c 'INSERT INTO big SELECT generate_series(1, 500)'; done) "
        ">/dev/null 2>&1 </dev/null &"
    )
    # pg_dump (for pgvault) ends when the inserts have: they span the whole dump
    env.data["postgres"]["bin_dir"] = str(
        wrapped_bin(workdir / "bin", before=inserts, after="wait")
    )
    env.data["postgres"]["user"] = user
    env.write_config()
    out = env.cli_json("backup", "logical", "--db", DB)
    assert out["ok"], out
    backup = out["backups"][0]
    timings = backup["timings"]
    niced = user == "postgres" and os.geteuid() == 0
    assert timings["count_niced"] is niced, timings
    assert (timings["count_big_during_s"] > 0) is niced
    counts = {(t["schema"], t["name"]): t["rows"] for t in manifest_of(env, backup)["tables"]}
    assert counts == EXPECTED
    dump = next(Path(backup["path"]).glob("*.dump"))
    assert copy_rows(dump, "big") == EXPECTED[("public", "big")]
    assert pg.one("SELECT count(*) FROM big", dbname=DB) == 150000 + 30 * 500


def test_count_all_batches_exactly(counts_env: tuple[PgvaultEnv, PgCluster]) -> None:
    """One statement per batch, every batch boundary, the order of the request kept."""
    env, pg = counts_env
    with pg.connect(DB) as conn:
        conn.execute("CREATE TABLE many_0 (x int)")
        for i in range(1, 12):
            conn.execute(f"CREATE TABLE many_{i} (x int)")
            conn.execute(f"INSERT INTO many_{i} SELECT generate_series(1, {i})")
    from pgvault import pg as pgmod

    with pgmod.connect(env.settings.postgres, DB) as conn:
        tables = pgtables.list_tables(conn)
        for batch in (1, 5, 200):
            old = pgtables.COUNT_BATCH
            pgtables.COUNT_BATCH = batch
            try:
                got = pgtables.count_all(conn, list(reversed(tables)))
            finally:
                pgtables.COUNT_BATCH = old
            assert list(got) == list(reversed(tables))
            one_by_one = {t: pgtables.count_rows(conn, t) for t in tables}
            assert got == one_by_one
            small, big = pgtables.split_by_size(conn, tables)
            assert big == [TableRef("public", "big")] and len(small) == len(tables) - 1
            assert got[TableRef("public", "many_11")] == 11
            assert got[TableRef(ODD_SCHEMA, ODD_TABLE)] == 7
        assert pgtables.count_all(conn, []) == {}


def dump_with(bin_dir: Path, pg: PgCluster, out: Path, *extra: str) -> Path:
    subprocess.run(
        [str(bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
         "-Fc", *extra, "-f", str(out), DB],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def available_pg_dumps() -> list[Path]:
    """pg_dump 15 (the server's) and newer: what can dump a PostgreSQL 15 server."""
    dirs = [pg_bin_for(m) for m in (15, 16, 17, 18)]
    return [d for d in dirs if d is not None and (d / "pg_dump").exists()]


def test_archive_reader_agrees_with_pg_restore(
    counts_env: tuple[PgvaultEnv, PgCluster], workdir: Path
) -> None:
    _env, pg = counts_env
    pg.sql("SELECT lo_from_bytea(0, 'blob') FROM generate_series(1, 2)", dbname=DB)
    non_empty = {TableRef(s, n) for (s, n), rows in EXPECTED.items() if rows}
    seen_versions = set()
    for bin_dir in available_pg_dumps():
        for extra in ((), ("-Z0",)):
            dump = dump_with(
                bin_dir, pg, workdir / f"{bin_dir.parent.name}{len(extra)}.dump", *extra
            )
            archive = pgdumpfile.read_archive(dump)
            pgdumpfile.check_blocks(dump, archive)
            seen_versions.add(archive.version)
            listing = subprocess.run(
                [str(bin_dir / "pg_restore"), "--list", "--verbose", str(dump)],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            entries = pgtoc.parse(listing)
            assert [(e.id, e.deps) for e in entries] == [(e.id, e.deps) for e in archive.entries]
            assert archive.partitions() == pgtoc.partitions(entries)
            assert archive.partitions()[TableRef("public", "meas_b")] == [
                TableRef("public", "meas_b1"),
                TableRef("public", "meas_b2"),
            ]
            assert non_empty <= archive.data_tables()
            assert TableRef(ODD_SCHEMA, ODD_TABLE) in archive.data_tables()
    assert seen_versions  # at least the server's own pg_dump ran


def test_broken_archives_are_refused(
    counts_env: tuple[PgvaultEnv, PgCluster], workdir: Path
) -> None:
    env, pg = counts_env
    good = dump_with(PG_BIN, pg, workdir / "good.dump")
    archive = pgdumpfile.read_archive(good)
    data = good.read_bytes()

    def broken(name: str, body: bytes) -> Path:
        path = workdir / name
        path.write_bytes(body)
        return path

    cut = broken("cut.dump", data[:-3])
    with pytest.raises(pgdumpfile.DumpFormatError, match="incomplete"):
        pgdumpfile.check_blocks(cut, pgdumpfile.read_archive(cut))
    block = max(e.offset for e in archive.entries if e.data_state == pgdumpfile.POS_SET)
    other = broken(
        "other.dump", data[: block + 2] + bytes([data[block + 2] ^ 0x40]) + data[block + 3 :]
    )
    with pytest.raises(pgdumpfile.DumpFormatError, match="another entry"):
        pgdumpfile.check_blocks(other, pgdumpfile.read_archive(other))
    with pytest.raises(pgdumpfile.DumpFormatError, match="ends inside"):
        pgdumpfile.read_archive(broken("head.dump", data[:200]))
    with pytest.raises(pgdumpfile.DumpFormatError, match="not a pg_dump"):
        pgdumpfile.read_archive(broken("text.dump", b"-- PostgreSQL database dump\n"))
    with pytest.raises(pgdumpfile.UnsupportedArchive):
        pgdumpfile.read_archive(broken("new.dump", data[:6] + b"\x63" + data[7:]))
    piped = subprocess.run(
        [str(PG_BIN / "pg_dump"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
         "-Fc", DB],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    pipe_dump = broken("pipe.dump", piped)
    with pytest.raises(pgdumpfile.DumpFormatError, match="no position"):
        pgdumpfile.check_blocks(pipe_dump, pgdumpfile.read_archive(pipe_dump))

    # end to end: a pg_dump that exits 0 but leaves a truncated archive is not kept
    trunc = 'f=$(printf "%s\\n" "$@" | sed -n "s/^--file=//p"); truncate -s -7 "$f"'
    env.data["postgres"]["bin_dir"] = str(wrapped_bin(workdir / "bin", after=trunc))
    env.write_config()
    proc = env.cli("backup", "logical", "--db", DB, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "data block of" in proc.stderr and "not kept" not in proc.stdout
    leftovers = [p for p in (env.spool / "logical").rglob("*") if not p.name.endswith(".lock")]
    assert leftovers == [] or all(p.is_dir() and not any(p.iterdir()) for p in leftovers)
    shutil.rmtree(workdir / "bin")
