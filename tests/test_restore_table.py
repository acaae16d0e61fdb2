"""`restore table`, `restore database`, `drill table` (issue 20) against a real cluster
with two databases and continuous writes: a table restored to T1 into a new table and
to T2 in place equals what it held at each time, the rest is untouched, only the files
needed are extracted, and the scratch cluster is gone afterwards."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgvault.errors import RestoreError
from pgvault.restore.partial import layout_for
from pgvault.restore.proven_extract import Proof
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.pgcluster import PgCluster, chown_pg
from tests.test_errors import zst_tar

ITEMS = "SELECT id, note, qty FROM items ORDER BY id"


class Writer:
    """Production keeps writing (both databases) while everything runs."""

    def __init__(self, pg: PgCluster) -> None:
        self.pg = pg
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with (
            psycopg.connect(self.pg.dsn("shop"), autocommit=True) as shop,
            psycopg.connect(self.pg.dsn("big"), autocommit=True) as big,
        ):
            while not self.stop.wait(0.05):
                shop.execute("INSERT INTO ticks(note) VALUES ('tick')")
                big.execute("INSERT INTO ticks(note) VALUES ('tick')")
                self.count += 1

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def rows(pg: PgCluster, db: str, query: str = ITEMS) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in pg.sql(query, dbname=db)]


def mark(env: PgvaultEnv, pg: PgCluster) -> tuple[str, list[Any]]:
    """A time just after the last change of items, and the table as it is then."""
    time.sleep(0.3)
    instant = pg.one("SELECT clock_timestamp()").isoformat()
    state = rows(pg, "shop")
    time.sleep(0.3)
    return instant, state


def prepare(env: PgvaultEnv) -> PgCluster:
    env.cli("init")
    pg = env.make_pg()
    pg.sql("CREATE DATABASE shop")
    pg.sql("CREATE DATABASE big")
    for db in ("shop", "big"):
        pg.sql("CREATE TABLE ticks (id serial PRIMARY KEY, note text)", dbname=db)
    pg.sql(
        "CREATE TABLE items (id serial PRIMARY KEY, note text NOT NULL, qty int);"
        "CREATE TABLE orders (id serial PRIMARY KEY, item_id int REFERENCES items(id));"
        "INSERT INTO items(note, qty) SELECT 'item ' || g, g FROM generate_series(1, 200) g;"
        "INSERT INTO orders(item_id) SELECT g FROM generate_series(1, 50) g",
        dbname="shop",
    )
    # the other database dominates the cluster, in a tablespace of its own for most of
    # it (the tablespace's tar is filtered too): a table restore must not extract it
    location = env.base / "big_ts"
    location.mkdir()
    chown_pg(location)
    pg.sql(f"CREATE TABLESPACE big_ts LOCATION '{location}'")
    pg.sql(
        "CREATE TABLE filler TABLESPACE big_ts AS SELECT g AS id, "
        "md5(g::text) || repeat('x', 200) AS pad FROM generate_series(1, 250000) g",
        dbname="big",
    )
    return pg


def scratch_left(parent: Path) -> list[str]:
    """Scratch directories left under `parent`, and processes still running from one."""
    left = [p.name for p in parent.iterdir()] if parent.exists() else []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(parent) in cmd and "pytest" not in cmd:
                left.append(f"process {pid}: {cmd}")
    return left


@pytest.mark.slow
def test_table_and_database_restored_as_they_were(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    env.cli("backup", "logical", "--db", "shop")
    before_backup = pg.one("SELECT clock_timestamp()").isoformat()
    env.cli("backup", "physical")
    scratch = env.base / "scratch"
    scratch.mkdir(mode=0o755)
    with Writer(pg) as writer:
        pg.sql("INSERT INTO items(note, qty) VALUES ('after backup', 1)", dbname="shop")
        # a database created after the base backup: its files come from WAL alone
        pg.sql("CREATE DATABASE late")
        pg.sql(
            "CREATE TABLE notes (id int PRIMARY KEY, body text);"
            "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 300) g",
            dbname="late",
        )
        pg.sql("UPDATE items SET qty = qty + 1000 WHERE id <= 10", dbname="shop")
        t1, at_t1 = mark(env, pg)
        pg.sql("DELETE FROM items WHERE id BETWEEN 100 AND 120", dbname="shop")
        pg.sql("INSERT INTO items(note, qty) VALUES ('between T1 and T2', 2)", dbname="shop")
        t2, at_t2 = mark(env, pg)
        late_at_t2 = rows(pg, "late", "SELECT * FROM notes ORDER BY id")
        pg.sql("DELETE FROM notes WHERE id > 10", dbname="late")
        # the damage, after T2
        pg.sql(
            "DELETE FROM orders WHERE item_id > 150; DELETE FROM items WHERE id > 150",
            dbname="shop",
        )
        pg.sql("UPDATE items SET note = 'damaged' WHERE id < 50", dbname="shop")
        pg.wait_archived(pg.switch_wal())
        env.drain()
        damaged = rows(pg, "shop")
        orders = rows(pg, "shop", "SELECT * FROM orders ORDER BY id")
        big_rows = pg.one("SELECT count(*) FROM filler", dbname="big")
        assert at_t1 != at_t2 != damaged

        # T1 into a new table beside the damaged one
        r1 = env.cli_json(
            "restore", "table", "--db", "shop", "--table", "public.items", "--at", t1,
            "--target-db", "shop", "--target-table", "items_t1", "--scratch-dir", str(scratch),
        )  # fmt: skip
        assert r1["ok"] and r1["restored_to"] <= t1
        assert rows(pg, "shop", "SELECT id, note, qty FROM items_t1 ORDER BY id") == at_t1
        assert rows(pg, "shop") == damaged  # the original is left alone
        assert r1["tables"] == [
            {"schema": "public", "name": "items_t1", "rows_at_target": len(at_t1)}
        ]
        assert scratch_left(scratch) == []

        # in place without --clean: one line, nothing touched
        bad = env.cli(
            "restore", "table", "--db", "shop", "--table", "public.items", "--at", t2,
            "--target-db", "shop", check=False,
        )  # fmt: skip
        assert bad.returncode == 1 and "--clean" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1

        # T2 in place
        r2 = env.cli_json(
            "restore", "table", "--db", "shop", "--table", "public.items", "--at", t2,
            "--target-db", "shop", "--clean", "--scratch-dir", str(scratch),
        )  # fmt: skip
        assert r2["ok"], r2
        assert rows(pg, "shop") == at_t2
        assert rows(pg, "shop", "SELECT * FROM orders ORDER BY id") == orders
        fks = pg.one(
            "SELECT count(*) FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'items'::regclass",
            dbname="shop",
        )
        assert fks == 1  # the foreign key pointing at it came back
        assert pg.one("SELECT count(*) FROM filler", dbname="big") == big_rows
        assert set(r2["timings"]) >= {
            f"{p}_s" for p in ("plan", "fetch", "extract", "replay", "dump", "load")
        }
        assert r2["layout"]["databases_zero_filled"] == ["big"]
        assert scratch_left(scratch) == []

        # a whole database at T2 (created after the backup), beside production; the big
        # one (and shop) never extracted
        rd = env.cli_json(
            "restore", "database", "--db", "late", "--at", t2, "--target-db", "late_t2",
            "--scratch-dir", str(scratch),
        )  # fmt: skip
        assert rd["ok"], rd
        assert rows(pg, "late_t2", "SELECT * FROM notes ORDER BY id") == late_at_t2
        assert rd["layout"]["databases_zero_filled"] == ["big", "shop"]
        assert rd["bytes_extracted"] < rd["data_size"] / 2, rd
        assert rd["bytes_zero_filled"] > rd["data_size"] / 2, rd
        assert scratch_left(scratch) == []
        again = env.cli(
            "restore", "database", "--db", "late", "--at", t2, "--target-db", "late_t2", check=False
        )  # fmt: skip
        assert again.returncode == 1 and "exists" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1

        # a time no base backup covers: one line with the dump fallback
        early = env.cli(
            "restore", "table", "--db", "shop", "--table", "public.items", "--at", before_backup,
            "--target-db", "shop", "--target-table", "x", check=False,
        )  # fmt: skip
        assert early.returncode == 1, early.stderr
        assert len(early.stderr.strip().splitlines()) == 1
        assert "not restorable" in early.stderr and "fallback" in early.stderr

        listed = env.cli_json("catalog", "restorable", "--at", t2)
        assert listed["table_restore"]["available"] is True, listed
        text = env.cli("catalog", "restorable", "--at", t2).stdout
        assert "pgvault restore table --db DB" in text and "restore pitr --to" in text

        # Ctrl-C while the scratch cluster runs: stopped and removed all the same
        proc = env.spawn(
            "restore", "table", "--db", "shop", "--table", "public.items", "--at", t2,
            "--target-db", "shop_ctrl_c", "--scratch-dir", str(scratch), log_name="ctrl-c",
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while not list(scratch.glob("*/data/postmaster.pid")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the scratch server never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
        assert scratch_left(scratch) == []

        drill = env.cli_json(
            "drill", "table", "--db", "shop", "--table", "public.items", "--seed", "3"
        )
        assert drill["ok"], drill
        assert drill["compared"]["public.items"]["equal"] is True
        assert scratch_left(scratch) == []
        assert writer.count > 0
    catalog = env.catalog()
    try:
        (row,) = catalog.query("SELECT kind, result, duration_s FROM drills WHERE kind = 'table'")
    finally:
        catalog.close()
    assert row["result"] == "ok" and row["duration_s"] > 0


DATABASES = [
    {"oid": 1, "name": "template1", "template": True},
    {"oid": 4, "name": "template0", "template": True},
    {"oid": 5, "name": "postgres", "template": False},
    {"oid": 16384, "name": "shop", "template": False},
    {"oid": 16385, "name": "big", "template": False},
]


def test_layout_keeps_templates_maintenance_and_the_database() -> None:
    layout = layout_for({"databases": DATABASES}, ["shop"], "postgres")
    assert layout.known and layout.skipped == {16385: "big"}
    assert layout.kept == ["postgres", "shop", "template0", "template1"]
    old = layout_for({"pg_major": 15}, ["shop"], "postgres")  # manifest before the list
    assert not old.known and old.skipped == {}


def test_skipped_database_files_are_sparse_and_ignored_by_verification(tmp_path: Path) -> None:
    page = b"x" * 8192
    archive = tmp_path / "base.tar.zst"
    files = {
        "global/pg_control": b"c" * 100,
        "base/16384/1259": page,
        "base/16385/1259": page * 2,
        "base/16385/PG_VERSION": b"15\n",
        "base/16399/1259": page,  # a database created while the backup ran
    }
    zst_tar(archive, files)
    ts_files = {"PG_15_202209061/16385/2000": page, "PG_15_202209061/16384/2000": page}
    expected = {n: (len(d), hashlib.sha256(d).hexdigest()) for n, d in files.items()}
    expected |= {
        f"pg_tblspc/99/{n}": (len(d), hashlib.sha256(d).hexdigest()) for n, d in ts_files.items()
    }
    proof = Proof(expected, usable=True)
    layout = layout_for({"databases": DATABASES}, ["shop"], "postgres")
    dest = tmp_path / "data"
    assert layout.extract(archive, dest, "", proof) == 5
    assert (dest / "base/16384/1259").read_bytes() == page
    assert (dest / "base/16399/1259").read_bytes() == page
    zeroed = dest / "base/16385/1259"
    assert zeroed.stat().st_size == 2 * 8192 and zeroed.read_bytes() == bytes(2 * 8192)
    assert zeroed.stat().st_blocks == 0  # sparse: nothing written
    assert (dest / "base/16385/PG_VERSION").read_bytes() == b"15\n"
    assert layout.bytes_sparse == 2 * 8192
    assert layout.bytes_extracted == 100 + 8192 + 3 + 8192
    ts = tmp_path / "ts.tar.zst"
    zst_tar(ts, ts_files)
    layout.extract(ts, tmp_path / "ts", "pg_tblspc/99", proof)
    assert layout.verify_ignores() == ["base/16385", "pg_tblspc/99/PG_15_202209061/16385"]
    # every extracted file proven on the way; the placeholders only skipped: no re-hash
    assert proof.skipped == {"base/16385/1259", "pg_tblspc/99/PG_15_202209061/16385/2000"}
    assert proof.proven == set(expected) - proof.skipped
    assert proof.complete and proof.verifybackup_flags() == ["--skip-checksums"]
    bad = tmp_path / "bad.tar.zst"
    zst_tar(bad, {"../escape": b"no"})
    with pytest.raises(RestoreError, match="unsafe path"):
        layout.extract(bad, tmp_path / "bad", "", proof)


def test_text_report_says_what_was_restored_and_what_was_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgvault.cli.table import print_result
    from pgvault.restore.table import TableRestoreResult

    result = TableRestoreResult(
        mode="tables", db="shop", target_db="shop", target="2026-11-24T09:41:00.000000Z",
        backup_id="B1", restored_to="2026-11-24T09:40:59+00:00", target_table="items_t1",
        tables=[{"schema": "public", "name": "items_t1", "rows_at_target": 42}],
        timings={"plan_s": 0.1, "fetch_s": 1.0, "extract_s": 2.0, "replay_s": 3.0,
                 "dump_s": 0.5, "load_s": 0.4, "total_s": 7.0},
        bytes_fetched=3 * 2**20, bytes_extracted=30 * 2**20, data_size=800 * 2**20,
        layout={"databases_known": True, "databases_zero_filled": ["big"]},
    )  # fmt: skip
    print_result(result)
    out = capsys.readouterr().out
    assert "restored public.items_t1 as of 2026-11-24T09:41:00.000000Z into shop as items_t1" in out
    assert "42 rows at T" in out
    assert "extracted 30.0 MiB of the backup's 800.0 MiB (not extracted: big)" in out
    assert "plan 0.1s, fetch 1.0s, extract 2.0s, replay 3.0s, dump 0.5s, load 0.4s" in out
