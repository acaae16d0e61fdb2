"""Logical backups end to end: pg_dump into the spool, RabbitMQ upload/verify/catalog,
restores (whole database, single tables, points in time) and drills, against real
PostgreSQL 15, the real RabbitMQ, the local store and S3 over HTTP (moto)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from pgvault.schemas import parse_event
from pgvault.storage.codec import sha256_file
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.logical_data import TABLES, create_database, databases, fingerprint, table_contents
from tests.pgcluster import PG_BIN, PgCluster, free_port

pytestmark = pytest.mark.slow

MEDUSA = "medusa_production"
STRAPI = "strapi_production"


def shop_env(
    make_env: EnvFactory,
    storage: str = "local",
    dbs: tuple[str, ...] = (MEDUSA, STRAPI),
    configured: tuple[str, ...] | None = None,
) -> tuple[PgvaultEnv, PgCluster]:
    env = make_env(storage)
    env.cli("init")
    pg = PgCluster(env.base)  # no archive_command: these tests are about dumps
    pg.initdb(None)
    pg.start()
    env.pg = pg
    for i, name in enumerate(dbs):
        create_database(pg, name, k=10 if i == 0 else 4)
    env.data["postgres"] = {
        "host": "127.0.0.1",
        "port": pg.port,
        "user": "postgres",
        "databases": list(configured or dbs),
    }
    env.write_config()
    return env, pg


def backup(env: PgvaultEnv, *dbs: str) -> dict[str, Any]:
    args = [x for d in dbs for x in ("--db", d)]
    out: dict[str, Any] = env.cli_json("backup", "logical", *args)
    assert all(b["ok"] for b in out["backups"]), out
    return {b["db"]: b for b in out["backups"]}


def restore(env: PgvaultEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return env.cli("restore", "logical", *args, check=False)


def restore_json(env: PgvaultEnv, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = env.cli_json("restore", "logical", *args)
    return out


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("pgvault: error:")]


def logical_rows(env: PgvaultEnv) -> dict[str, dict[str, Any]]:
    cat = env.catalog()
    try:
        rows = cat.query("SELECT * FROM artifacts WHERE kind = 'logical'")
    finally:
        cat.close()
    return {r["name"]: r for r in rows}


def alerts(env: PgvaultEnv) -> list[Any]:
    broker = env.broker()
    return [parse_event(d.body) for d in broker.take(broker.topology.queue("alert"))]


def spool_leftovers(env: PgvaultEnv) -> list[str]:
    """Hidden work directories or files in the logical spool (lock files excepted)."""
    root = env.spool / "logical"
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob(".*")
        if not (p.parent == root and p.name.endswith(".lock"))
    )


def check_spool_backup(env: PgvaultEnv, pg: PgCluster, db: str, backup_id: str) -> None:
    """The backup directory holds exactly the dump and a manifest that describes it."""
    bdir = env.spool / "logical" / db / backup_id
    assert sorted(p.name for p in bdir.iterdir()) == sorted([f"{db}.dump", "manifest.json"])
    manifest = json.loads((bdir / "manifest.json").read_text())
    digest = sha256_file(bdir / f"{db}.dump")
    assert manifest["files"] == [
        {"name": f"{db}.dump", "size": digest.size, "sha256": digest.sha256}
    ]
    assert manifest["db"] == db and manifest["backup_id"] == backup_id
    assert manifest["kind"] == "logical" and manifest["format"] == "custom"
    assert manifest["compression"] == {"method": "gzip", "level": 6}  # pg_dump 15
    assert manifest["pg_dump_version"].startswith("15.")
    assert manifest["started_at"] <= manifest["snapshot_at"] <= manifest["finished_at"]
    counts = {f"{t['schema']}.{t['name']}": t["rows"] for t in manifest["tables"]}
    assert sorted(counts) == sorted(TABLES)
    for table, rows in counts.items():
        assert table_contents(pg, db, table)[0] == rows, table


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_backup_and_whole_database_restore_match_the_source(
    make_env: EnvFactory, storage: str
) -> None:
    env, pg = shop_env(make_env, storage)
    done = backup(env)
    assert sorted(done) == [MEDUSA, STRAPI]
    for db, b in done.items():
        check_spool_backup(env, pg, db, b["backup_id"])
    assert spool_leftovers(env) == []
    env.drain(rounds=2)
    rows = logical_rows(env)
    store = env.store()
    for db, b in done.items():
        row = rows[f"{db}/{b['backup_id']}"]
        assert row["state"] == "verified", row
        assert row["db"] == db and row["backup_id"] == b["backup_id"]
        assert row["started_at"] < row["finished_at"]
        meta = json.loads(row["meta"])
        assert "tables" not in meta and meta["table_count"] == len(TABLES)
        for f in json.loads(row["files"]):
            assert f["key"] == f"pg/{env.cluster}/logical/{db}/{b['backup_id']}/{f['name']}"
            info = store.head(f["key"])
            assert info is not None and info.metadata["content-sha256"] == f["sha256"]
            assert f["codec"] == "none"  # dumps are compressed by pg_dump, not again
    listed = env.cli_json("catalog", "list", "--kind", "logical")
    assert listed["count"] == 2

    source = fingerprint(pg, MEDUSA)
    rep = restore_json(env, "--db", MEDUSA, "--target-db", "medusa_copy", "--jobs", "2")
    assert rep["ok"] and rep["mismatches"] == 0 and rep["fetched_from"] == "spool"
    assert rep["backup_id"] == done[MEDUSA]["backup_id"] and not rep["replaced"]
    assert {f"{t['schema']}.{t['name']}" for t in rep["tables"]} == set(TABLES)
    assert fingerprint(pg, "medusa_copy") == source

    # an existing target is refused and left alone ...
    pg.sql("INSERT INTO public.audit_log(what) VALUES ('marker')", dbname="medusa_copy")
    proc = restore(env, "--db", MEDUSA, "--target-db", "medusa_copy")
    assert proc.returncode == 1
    assert len(error_lines(proc.stderr)) == 1 and "--clean" in proc.stderr
    assert pg.one("SELECT count(*) FROM audit_log WHERE what = 'marker'", dbname="medusa_copy") == 1
    # ... and replaced with --clean
    rep = restore_json(env, "--db", MEDUSA, "--target-db", "medusa_copy", "--clean")
    assert rep["ok"] and rep["replaced"]
    assert fingerprint(pg, "medusa_copy") == source
    # the source database is never written without --force-in-place
    proc = restore(env, "--db", MEDUSA, "--target-db", MEDUSA, "--clean")
    assert proc.returncode == 1 and "--force-in-place" in proc.stderr

    # without its spool copy the dump comes from the store, still proven by sha256
    shutil.rmtree(env.spool / "logical" / STRAPI / done[STRAPI]["backup_id"])
    rep = restore_json(env, "--db", STRAPI, "--target-db", "strapi_copy")
    assert rep["ok"] and rep["fetched_from"] == "store"
    assert fingerprint(pg, "strapi_copy") == fingerprint(pg, STRAPI)
    assert not [d for d in databases(pg) if d.startswith("pgvault_restore_")]
    assert not list((env.spool / "tmp").glob("restore-*"))


def test_single_table_restore_replaces_just_that_table(make_env: EnvFactory) -> None:
    env, pg = shop_env(make_env, "local", dbs=(MEDUSA,))
    backup(env)
    env.drain(rounds=2)
    before = fingerprint(pg, MEDUSA)
    pg.sql("DELETE FROM shop.orders WHERE id %% 3 = 0", dbname=MEDUSA)  # cascades to items
    pg.sql("UPDATE shop.orders SET total = 0 WHERE id %% 3 = 1", dbname=MEDUSA)
    damaged = fingerprint(pg, MEDUSA)
    assert damaged["tables"]["shop.orders"] != before["tables"]["shop.orders"]

    proc = restore(env, "--db", MEDUSA, "--target-db", MEDUSA, "--table", "shop.orders")
    assert proc.returncode == 1 and "--force-in-place" in proc.stderr
    rep = restore_json(
        env, "--db", MEDUSA, "--target-db", MEDUSA, "--force-in-place", "--table", "shop.orders"
    )
    assert rep["ok"] and rep["mode"] == "tables"
    assert [(t["schema"], t["name"], t["expected"], t["restored"]) for t in rep["tables"]] == [
        ("shop", "orders", 3000, 3000)
    ]
    after = fingerprint(pg, MEDUSA)
    assert after["tables"]["shop.orders"] == before["tables"]["shop.orders"]
    # other tables are as they were just before the restore (items stay deleted)
    for table in TABLES:
        if table != "shop.orders":
            assert after["tables"][table] == damaged["tables"][table], table
    # definitions: indexes, constraints (incl. the FK from order_items), view, comment
    for part in ("indexes", "constraints", "views", "comments", "enums", "sequences"):
        assert after[part] == before[part], part

    # a bare table name into a new database: that table, with what it needs
    rep = restore_json(env, "--db", MEDUSA, "--target-db", "pages_only", "--table", "pages")
    # the database now exists: replacing a table in it again needs --clean
    again = restore(env, "--db", MEDUSA, "--target-db", "pages_only", "--table", "pages")
    assert again.returncode == 1 and "pass --clean" in again.stderr
    assert rep["ok"] and [t["name"] for t in rep["tables"]] == ["pages"]
    assert any("revisions_page_id_fkey" in s for s in rep["skipped"])
    assert pg.sql(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'cms'", dbname="pages_only"
    ) == [("cms", "pages")]
    assert table_contents(pg, "pages_only", "cms.pages") == before["tables"]["cms.pages"]

    # a restore that would break a foreign key rolls back and changes nothing
    pg.sql(
        "INSERT INTO shop.customers (id, email, name) VALUES (999999, 'new@x', 'New')",
        dbname=MEDUSA,
    )
    pg.sql(
        "INSERT INTO shop.orders (customer_id, total, placed_at) VALUES (999999, 1, now())",
        dbname=MEDUSA,
    )
    customers = table_contents(pg, MEDUSA, "shop.customers")
    proc = restore(
        env, "--db", MEDUSA, "--target-db", MEDUSA, "--force-in-place", "--table", "customers"
    )
    assert proc.returncode == 1
    assert "rolled back" in proc.stderr and "foreign key" in proc.stderr
    assert table_contents(pg, MEDUSA, "shop.customers") == customers
    assert fingerprint(pg, MEDUSA)["constraints"] == before["constraints"]

    proc = restore(env, "--db", MEDUSA, "--target-db", "x", "--table", "shop.nope")
    assert proc.returncode == 1 and "not in the dump" in proc.stderr
    assert "x" not in databases(pg)


def test_drill_passes_from_the_store_and_is_recorded(make_env: EnvFactory) -> None:
    env, pg = shop_env(make_env, "s3")
    done = backup(env)
    env.drain(rounds=2)
    out = env.cli_json("drill", "logical")
    drills = {d["db"]: d for d in out["drills"]}
    assert sorted(drills) == [MEDUSA, STRAPI]
    for db, d in drills.items():
        assert d["result"] == "ok" and d["error"] is None, d
        assert d["backup"] == f"{db}/{done[db]['backup_id']}"
        assert d["tables"] == len(TABLES) and d["mismatches"] == []
        assert d["amcheck"] == "ok"
        assert d["scratch_db"] == f"{db}_verify_{datetime.now(UTC):%Y%m%d}"
        assert 0 < d["rto_s"] <= d["duration_s"]
    cat = env.catalog()
    try:
        rows = cat.query("SELECT * FROM drills ORDER BY target")
    finally:
        cat.close()
    assert [(r["kind"], r["target"], r["result"]) for r in rows] == [
        ("logical", MEDUSA, "ok"),
        ("logical", STRAPI, "ok"),
    ]
    for r in rows:
        details = json.loads(r["details"])
        assert details["fetched_from"] == "store" and details["mismatches"] == []
        assert r["duration_s"] > 0 and r["backup"].endswith(details["backup_id"])
    assert not [d for d in databases(pg) if "_verify_" in d or d.startswith("pgvault_restore")]
    assert not [a for a in alerts(env) if a.check == "drill_failed"]


def corrupt_object(env: PgvaultEnv, key: str) -> None:
    """Flip bytes in the middle of a stored object, keeping its size and metadata."""
    if env.settings.storage.type == "local":
        path = Path(env.settings.storage.path) / key
        data = bytearray(path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
        path.write_bytes(bytes(data))
        return
    s3 = boto3.client("s3", endpoint_url=env.settings.storage.endpoint_url, region_name="us-east-1")
    bucket = env.settings.storage.bucket
    obj = s3.get_object(Bucket=bucket, Key=key)
    data = bytearray(obj["Body"].read())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=obj["Metadata"])


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_corrupt_stored_dump_is_refused_and_fails_the_drill(
    make_env: EnvFactory, storage: str
) -> None:
    env, pg = shop_env(make_env, storage, dbs=(MEDUSA,))
    backup_id = backup(env)[MEDUSA]["backup_id"]
    env.drain(rounds=2)
    row = logical_rows(env)[f"{MEDUSA}/{backup_id}"]
    dump = next(f for f in json.loads(row["files"]) if f["name"].endswith(".dump"))
    corrupt_object(env, dump["key"])
    # the producer removes spool copies after local_keep_days: the store's is all there is
    shutil.rmtree(env.spool / "logical" / MEDUSA / backup_id)

    proc = restore(env, "--db", MEDUSA, "--target-db", "medusa_copy")
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "sha256" in errors[0] and "refusing" in errors[0], proc.stderr
    assert "medusa_copy" not in databases(pg)
    assert not list((env.spool / "tmp").glob("restore-*"))

    proc = env.cli("drill", "logical", check=False)
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        ln for ln in error_lines(proc.stderr) if "drill of medusa_production failed" in ln
    ]
    cat = env.catalog()
    try:
        drills = cat.query("SELECT * FROM drills")
    finally:
        cat.close()
    assert [d["result"] for d in drills] == ["failed"]
    assert "sha256" in json.loads(drills[0]["details"])["error"]
    failed = [a for a in alerts(env) if a.check == "drill_failed"]
    assert len(failed) == 1 and failed[0].subject == MEDUSA and failed[0].severity == "critical"
    assert not [d for d in databases(pg) if "_verify_" in d or d.startswith("pgvault_restore")]


def test_failing_database_does_not_stop_the_other(make_env: EnvFactory) -> None:
    env, pg = shop_env(make_env, "local", dbs=(MEDUSA,), configured=("missing_db", MEDUSA))
    proc = env.cli("backup", "logical", check=False)
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "missing_db" in errors[0] and "does not exist" in errors[0]
    (bdir,) = (env.spool / "logical" / MEDUSA).iterdir()
    check_spool_backup(env, pg, MEDUSA, bdir.name)
    assert not (env.spool / "logical" / "missing_db").exists()
    assert spool_leftovers(env) == []
    cat = env.catalog()
    try:
        runs = cat.query("SELECT target, result, error FROM backup_runs ORDER BY id")
    finally:
        cat.close()
    assert [(r["target"], r["result"]) for r in runs] == [("missing_db", "failed"), (MEDUSA, "ok")]
    assert "does not exist" in runs[0]["error"]
    failed = [a for a in alerts(env) if a.check == "backup_failed"]
    assert [(a.subject, a.severity) for a in failed] == [("missing_db", "critical")]
    env.drain(rounds=2)
    assert logical_rows(env)[f"{MEDUSA}/{bdir.name}"]["state"] == "verified"


def test_point_in_time_selection_and_bad_times(make_env: EnvFactory) -> None:
    env, pg = shop_env(make_env, "local", dbs=(MEDUSA,))
    first = backup(env)[MEDUSA]["backup_id"]
    v1 = fingerprint(pg, MEDUSA)
    time.sleep(1.1)
    between = datetime.now(UTC).replace(tzinfo=None).isoformat()  # no zone: UTC
    pg.sql("INSERT INTO public.audit_log(what) VALUES ('after the first dump')", dbname=MEDUSA)
    v2 = fingerprint(pg, MEDUSA)
    second = backup(env)[MEDUSA]["backup_id"]
    assert second > first
    env.drain(rounds=2)

    proc = restore(env, "--db", MEDUSA, "--target-db", "c0", "--at", "2000-01-01T00:00:00Z")
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "no verified dump of medusa_production" in errors[0]
    assert "2000-01-01" in errors[0] and first in errors[0]
    proc = restore(env, "--db", MEDUSA, "--target-db", "c0", "--at", "yesterday")
    assert proc.returncode == 2 and "ISO 8601" in proc.stderr
    proc = restore(env, "--db", MEDUSA, "--target-db", "c0", "--at", between, "--backup", first)
    assert proc.returncode == 2
    proc = restore(env, "--db", MEDUSA, "--target-db", "c0", "--backup", "19990101T000000Z")
    assert proc.returncode == 1 and "no logical backup" in proc.stderr
    assert "c0" not in databases(pg)

    rep = restore_json(env, "--db", MEDUSA, "--target-db", "c1", "--at", between)
    assert rep["backup_id"] == first and fingerprint(pg, "c1") == v1
    rep = restore_json(env, "--db", MEDUSA, "--target-db", "c2")
    assert rep["backup_id"] == second and fingerprint(pg, "c2") == v2
    rep = restore_json(env, "--db", MEDUSA, "--target-db", "c3", "--backup", first)
    assert rep["backup_id"] == first and fingerprint(pg, "c3") == v1


def test_unreachable_server_old_pg_dump_and_full_spool(make_env: EnvFactory, workdir: Path) -> None:
    env, _pg = shop_env(make_env, "local", dbs=(MEDUSA,))
    port = env.data["postgres"]["port"]

    env.data["postgres"]["port"] = free_port()
    env.write_config()
    proc = env.cli("backup", "logical", check=False)
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "cannot connect" in errors[0] and MEDUSA in errors[0]
    env.data["postgres"]["port"] = port

    # a pg_dump older than the server (reports 14.11; the server is 15)
    old = workdir / "oldbin"
    old.mkdir()
    (old / "pg_dump").write_text(
        f'#!/bin/sh\n[ "$1" = "--version" ] && echo "pg_dump (PostgreSQL) 14.11" && exit 0\n'
        f'exec {PG_BIN}/pg_dump "$@"\n'
    )
    (old / "pg_dump").chmod(0o755)
    (old / "pg_restore").symlink_to(PG_BIN / "pg_restore")
    env.data["postgres"]["bin_dir"] = str(old)
    env.write_config()
    proc = env.cli("backup", "logical", check=False)
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "PostgreSQL 15" in errors[0] and "pg_dump is 14.11" in errors[0]
    env.data["postgres"]["bin_dir"] = ""

    tiny = workdir / "tiny"
    tiny.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)]
    if subprocess.run(mount, check=False, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        env.data["spool_dir"] = str(tiny)
        env.write_config()
        proc = env.cli("backup", "logical", check=False)
        assert proc.returncode == 1
        errors = error_lines(proc.stderr)
        assert len(errors) == 1 and "is full" in errors[0] and "No space left" in errors[0]
        logical = tiny / "logical"
        assert [p.name for p in logical.iterdir()] == [f".{MEDUSA}.lock"]
    finally:
        subprocess.run(["umount", str(tiny)], check=False)
    env.data["spool_dir"] = str(env.spool)
    env.write_config()
    assert os.listdir(env.spool / "logical") in ([], [f".{MEDUSA}.lock"])
    failed = [a for a in alerts(env) if a.check == "backup_failed"]
    assert [a.subject for a in failed] == [MEDUSA] * 3


def test_restore_refusals_come_before_any_fetch(make_env: EnvFactory) -> None:
    """An existing target without --clean and an unknown table are refused before a byte
    of the dump is fetched: with the dump gone from the spool and the store, the error is
    about the target or the table, not about the missing dump."""
    env, pg = shop_env(make_env, "local", dbs=(MEDUSA,))
    backup_id = backup(env)[MEDUSA]["backup_id"]
    env.drain(rounds=2)
    row = logical_rows(env)[f"{MEDUSA}/{backup_id}"]
    dump = next(f for f in json.loads(row["files"]) if f["name"].endswith(".dump"))
    shutil.rmtree(env.spool / "logical" / MEDUSA / backup_id)
    (Path(env.settings.storage.path) / dump["key"]).unlink()
    pg.sql("CREATE DATABASE medusa_copy")

    proc = restore(env, "--db", MEDUSA, "--target-db", "medusa_copy")
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "medusa_copy exists" in errors[0], proc.stderr
    assert "--clean" in errors[0]
    proc = restore(env, "--db", MEDUSA, "--target-db", "medusa_copy", "--table", "shop.orders")
    assert proc.returncode == 1 and "medusa_copy exists" in proc.stderr, proc.stderr
    proc = restore(env, "--db", MEDUSA, "--target-db", "fresh", "--table", "shop.nope")
    assert proc.returncode == 1 and "not in the dump" in proc.stderr, proc.stderr
    # the dump really is gone: a restore that passes every check fails on the fetch
    proc = restore(env, "--db", MEDUSA, "--target-db", "fresh")
    assert proc.returncode == 1 and "refusing to restore" in proc.stderr, proc.stderr
    assert "fresh" not in databases(pg)
    assert not list((env.spool / "tmp").glob("restore-*"))
