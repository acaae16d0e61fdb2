"""Invariant 11 against real clusters: a restore never writes into a source tablespace.

The production cluster gets a tablespace after its base backup; a point-in-time restore on
the same host replays the CREATE TABLESPACE record. Every file of the source's tablespace
directory is checksummed before the restore and after the restored copy was written to:
nothing may change there, and the restored tablespace must live under the target."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.pgcluster import chown_pg
from tests.test_pitr import prepare, stop_server

pytestmark = pytest.mark.slow


def tree_digest(root: Path) -> dict[str, str]:
    """Path -> sha256 (or link target / 'dir') of everything under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cold_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute("SELECT id, note FROM cold ORDER BY id").fetchall()]


def tablespace_after_backup(env: PgvaultEnv) -> tuple[Any, Path, str, list[Any], int]:
    """Backup, then a tablespace with 10,100 rows, a target time T and the rows at T."""
    pg = prepare(env)
    env.cli("backup", "physical")
    location = env.base / "production_ts"
    location.mkdir()
    chown_pg(location)
    pg.sql(f"CREATE TABLESPACE prod_ts LOCATION '{location}'")
    pg.sql("CREATE TABLE cold (id int PRIMARY KEY, note text) TABLESPACE prod_ts")
    pg.sql("INSERT INTO cold SELECT g, 'row ' || g FROM generate_series(1, 10100) g")
    pg.sql("CHECKPOINT")
    pg.switch_wal()
    time.sleep(0.3)
    target = pg.one("SELECT clock_timestamp()").isoformat()
    expected = [tuple(r) for r in pg.sql("SELECT id, note FROM cold ORDER BY id")]
    time.sleep(0.3)
    pg.sql("INSERT INTO ticks(note) VALUES ('after T')")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    oid = int(pg.one("SELECT oid FROM pg_tablespace WHERE spcname = 'prod_ts'"))
    # production stops writing (autovacuum, hint bits, checkpoints) before its tablespace
    # is checksummed: from here on, any change there can only come from a restored copy
    pg.stop()
    return pg, location, target, expected, oid


def test_pitr_maps_a_tablespace_created_after_the_backup_into_the_target(
    make_env: EnvFactory,
) -> None:
    env = make_env("local")
    pg, location, target, expected, oid = tablespace_after_backup(env)
    # the catalog knows the record and the plan says where it goes
    answer = env.cli_json("catalog", "restorable", "--at", target)
    assert answer["restorable"] is True
    assert [(t["oid"], t["location"]) for t in answer["plan"]["tablespaces"]] == [
        (oid, str(location))
    ]
    before = tree_digest(location)
    assert before, "the source tablespace holds files"
    target_dir = env.base / "restored"
    result = env.cli_json(
        "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start"
    )
    dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
    try:
        assert cold_rows(dsn) == expected
        # write hard into the restored copy: none of it may reach the source's files
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM cold WHERE id % 2 = 0")
            conn.execute(
                "INSERT INTO cold SELECT g, 'restored ' || g FROM generate_series(20000, 30000) g"
            )
            conn.execute("VACUUM FULL cold")
            conn.execute("CHECKPOINT")
            where = conn.execute("SELECT pg_tablespace_location(%s)", (oid,)).fetchone()[0]
    finally:
        stop_server(target_dir)
    assert tree_digest(location) == before, "the restored copy wrote into production's tablespace"
    pg.start()
    assert [tuple(r) for r in pg.sql("SELECT id, note FROM cold ORDER BY id")] == expected
    mapped = target_dir / "pg_tblspc_data" / str(oid)
    link = target_dir / "pg_tblspc" / str(oid)
    assert link.is_symlink() and Path(os.path.realpath(link)) == mapped.resolve()
    assert where == str(mapped)
    assert any(mapped.rglob("*")), "the restored tablespace's files are under the target"
    assert result["tablespaces"] == [
        {
            "oid": oid,
            "name": None,
            "source_location": str(location),
            "restored_to": str(mapped),
            "from": "WAL replay",
        }
    ]


def test_tablespace_map_and_refusals_before_anything_is_fetched(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg, location, target, expected, oid = tablespace_after_backup(env)
    before = tree_digest(location)

    def mapped_restore(mapping: str) -> subprocess.CompletedProcess[str]:
        return env.cli(
            "restore", "pitr", "--to", target, "--target-dir", str(env.base / "r1"),
            "--tablespace-map", mapping, check=False,
        )  # fmt: skip

    # mapping into the source's own directory is refused before anything is written
    for bad in (str(location), str(location / "sub")):
        refused = mapped_restore(f"{oid}={bad}")
        assert refused.returncode == 1, refused.stderr
        errors = [ln for ln in refused.stderr.splitlines() if ln.strip()]
        assert len(errors) == 1 and "overlaps the source tablespace" in errors[0], refused.stderr
        assert not (env.base / "r1").exists()
    unknown = mapped_restore("nosuch=/tmp/x")
    assert unknown.returncode == 2 and "no such tablespace" in unknown.stderr
    malformed = mapped_restore("relative")
    assert malformed.returncode == 2 and "NAME=DIR" in malformed.stderr
    # mapped by its original location, to a directory outside the target
    elsewhere = env.base / "elsewhere"
    target_dir = env.base / "r2"
    result = env.cli_json(
        "restore",
        "pitr",
        "--to",
        target,
        "--target-dir",
        str(target_dir),
        "--start",
        "--tablespace-map",
        f"{location}={elsewhere}",
    )
    dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
    try:
        assert cold_rows(dsn) == expected
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE cold SET note = 'changed'")
            conn.execute("CHECKPOINT")
    finally:
        stop_server(target_dir)
    assert os.path.realpath(target_dir / "pg_tblspc" / str(oid)) == str(elsewhere.resolve())
    assert any(elsewhere.rglob("*"))
    assert tree_digest(location) == before
    pg.start()
    assert [tuple(r) for r in pg.sql("SELECT id, note FROM cold ORDER BY id")] == expected


def test_pitr_drill_keeps_away_from_the_source_tablespace(make_env: EnvFactory) -> None:
    env = make_env("local")
    _pg, location, _target, _expected, _oid = tablespace_after_backup(env)
    before = tree_digest(location)
    scratch = env.base / "scratch"
    scratch.mkdir()
    result = env.cli_json("drill", "pitr", "--scratch-dir", str(scratch), "--seed", "3")
    assert result["ok"] is True, result
    assert list(scratch.iterdir()) == []
    assert tree_digest(location) == before


def test_segments_catalogued_without_tablespace_facts_are_scanned_at_restore(
    make_env: EnvFactory,
) -> None:
    """A catalog from before the facts existed: the restore scans each segment itself."""
    env = make_env("local")
    _pg, location, target, expected, oid = tablespace_after_backup(env)
    cat = env.catalog()
    try:
        with cat.transaction() as conn:
            conn.execute(
                "UPDATE artifacts SET meta = json_remove(meta, '$.tblspc_scan', "
                "'$.tablespaces', '$.tblspc_straddle') WHERE kind = 'wal'"
            )
    finally:
        cat.close()
    answer = env.cli_json("catalog", "restorable", "--at", target)
    assert answer["plan"]["tablespaces"] == []
    assert answer["plan"]["segments_to_scan_for_tablespaces"] == answer["plan"]["segments"]
    before = tree_digest(location)
    target_dir = env.base / "legacy"
    result = env.cli_json(
        "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start"
    )
    dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
    try:
        assert cold_rows(dsn) == expected
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE cold")
            conn.execute("CHECKPOINT")
    finally:
        stop_server(target_dir)
    assert tree_digest(location) == before
    mapped = target_dir / "pg_tblspc_data" / str(oid)
    assert os.path.realpath(target_dir / "pg_tblspc" / str(oid)) == str(mapped.resolve())


def test_backup_with_two_tablespaces_restores_exactly_with_and_without_a_map(
    make_env: EnvFactory,
) -> None:
    env = make_env("s3")
    pg = prepare(env)
    spaces = {}
    for name in ("ts_a", "ts_b"):
        location = env.base / f"prod_{name}"
        location.mkdir()
        chown_pg(location)
        pg.sql(f"CREATE TABLESPACE {name} LOCATION '{location}'")
        pg.sql(f"CREATE TABLE t_{name} (id int PRIMARY KEY, note text) TABLESPACE {name}")
        pg.sql(f"INSERT INTO t_{name} SELECT g, '{name} ' || g FROM generate_series(1, 3000) g")
        spaces[name] = location
    env.cli("backup", "physical")
    pg.sql("UPDATE t_ts_a SET note = 'after backup' WHERE id <= 100")
    pg.sql("INSERT INTO t_ts_b SELECT g, 'late ' || g FROM generate_series(3001, 3500) g")
    pg.switch_wal()
    time.sleep(0.3)
    target = pg.one("SELECT clock_timestamp()").isoformat()
    expected = {
        n: [tuple(r) for r in pg.sql(f"SELECT id, note FROM t_{n} ORDER BY id")] for n in spaces
    }
    time.sleep(0.3)
    pg.sql("DELETE FROM t_ts_a")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    cat = env.catalog()
    try:
        (row,) = cat.query("SELECT files, state FROM artifacts WHERE kind = 'physical'")
    finally:
        cat.close()
    oids = {
        n: int(pg.one("SELECT oid FROM pg_tablespace WHERE spcname = %s", (n,))) for n in spaces
    }
    assert row["state"] == "verified"
    stored = {f["name"] for f in json.loads(row["files"])}
    assert {f"{oids[n]}.tar.zst" for n in spaces} <= stored, stored
    pg.stop()  # from here on, only a restored copy could change the source tablespaces
    before = {n: tree_digest(loc) for n, loc in spaces.items()}
    # the VM is gone: the catalog rebuilt from the store alone knows the tablespaces too
    env.cli("producer", "--once")  # exports the verification receipts
    restorable = env.cli_json("catalog", "restorable", "--at", target)
    for suffix in ("", "-wal", "-shm"):
        path = env.settings.catalog_path
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    env.cli("catalog", "rebuild")
    assert env.cli_json("catalog", "restorable", "--at", target) == restorable
    elsewhere = env.base / "b_elsewhere"
    for label, extra in (
        ("plain", []),
        ("mapped", ["--tablespace-map", f"ts_b={elsewhere}"]),
    ):
        target_dir = env.base / f"restore_{label}"
        result = env.cli_json(
            "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start", *extra
        )
        dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for n in spaces:
                    rows = conn.execute(f"SELECT id, note FROM t_{n} ORDER BY id").fetchall()
                    assert [tuple(r) for r in rows] == expected[n], (label, n)
                    conn.execute(f"UPDATE t_{n} SET note = 'written by the copy'")
                conn.execute("CHECKPOINT")
                locations = dict(
                    conn.execute(
                        "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace "
                        "WHERE spcname LIKE 'ts_%'"
                    ).fetchall()
                )
        finally:
            stop_server(target_dir)
        want_b = elsewhere if label == "mapped" else target_dir / "pg_tblspc_data" / "ts_b"
        assert locations == {
            "ts_a": str(target_dir / "pg_tblspc_data" / "ts_a"),
            "ts_b": str(want_b),
        }
        assert {t["name"]: t["from"] for t in result["tablespaces"]} == {
            "ts_a": "base backup",
            "ts_b": "base backup",
        }
        for n, loc in spaces.items():
            assert tree_digest(loc) == before[n], f"{label}: the copy wrote into {n}"
