"""Disaster recovery on a new machine: the catalog rebuilt from the store alone (issue 9)."""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.logical_data import create_database, fingerprint
from tests.test_pitr import mark_target, prepare, restore_and_read, snapshot

pytestmark = pytest.mark.slow


def lose_the_vm(env: PgvaultEnv) -> None:
    """The spool and the catalog are gone; config and store credentials remain."""
    shutil.rmtree(env.spool)
    for suffix in ("", "-wal", "-shm"):
        path = env.settings.catalog_path.with_name(env.settings.catalog_path.name + suffix)
        path.unlink(missing_ok=True)


def comparable(restorable: dict[str, Any]) -> dict[str, Any]:
    return {
        "windows": restorable["windows"],
        "backups": [
            {
                k: b[k]
                for k in (
                    "backup_id",
                    "start",
                    "end",
                    "usable",
                    "segments",
                    "broken_at",
                    "timeline",
                )
            }
            for b in restorable["backups"]
        ],
    }


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_rebuild_reproduces_windows_and_restores(make_env: EnvFactory, storage: str) -> None:
    env = make_env(storage)
    pg = prepare(env)
    create_database(pg, "shop", k=2)
    env.data["postgres"]["databases"] = ["shop"]
    env.write_config()
    env.cli("backup", "logical")
    env.cli("backup", "physical")
    for i in range(3):
        pg.sql("INSERT INTO ticks(note) VALUES (%s)", (f"dr {i}",))
        pg.switch_wal()
        time.sleep(0.2)
    target = pg.one("SELECT clock_timestamp()").isoformat()
    expected = snapshot(pg)
    time.sleep(0.2)
    pg.sql("INSERT INTO ticks(note) VALUES ('after target')")
    pg.wait_archived(pg.switch_wal())
    # a second base backup whose manifest never made it: incomplete, never used
    env.cli("backup", "physical")
    env.drain()
    env.cli("producer", "--once")  # exports the verification receipts
    before = env.cli_json("catalog", "restorable")
    listed_before = {a["name"] for a in env.cli_json("catalog", "list")["artifacts"]}
    store = env.store()
    second = sorted(p.name for p in (env.spool / "physical").iterdir())[-1]
    store.delete(f"pg/{env.cluster}/physical/{second}/manifest.json")
    store.put_bytes(f"pg/{env.cluster}/something/else.txt", b"stray", {})
    lose_the_vm(env)

    report = env.cli_json("catalog", "rebuild")
    assert report["incomplete"] == [f"physical/{second}"]
    assert report["unknown"] == [f"pg/{env.cluster}/something/else.txt"]
    assert report["unproven"] == 0 and report["verified"] > 0
    after = env.cli_json("catalog", "restorable")
    expected_before = comparable(before)
    expected_before["backups"] = [b for b in expected_before["backups"] if b["backup_id"] != second]
    assert comparable(after) == expected_before
    listed_after = {a["name"] for a in env.cli_json("catalog", "list")["artifacts"]}
    assert listed_after == listed_before - {second}
    # a second rebuild is a no-op
    again = env.cli_json("catalog", "rebuild")
    assert again["added"] == [] and again["missing"] == []
    # restore on the "new machine": no spool, WAL and base backup from the store
    _result, rows = restore_and_read(env, target, "dr-restore")
    assert rows == expected
    assert after["logical"] and after["logical"][0]["db"] == "shop"
    env.cli("restore", "logical", "--db", "shop", "--target-db", "shop_restored")
    assert fingerprint(pg, "shop_restored") == fingerprint(pg, "shop")


def test_restore_without_catalog_rebuilds_first(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    env.cli("backup", "physical")
    target, expected = mark_target(env, pg, "fresh host")
    env.cli("producer", "--once")
    lose_the_vm(env)
    env.spool.mkdir()
    result = env.cli(
        "restore",
        "pitr",
        "--to",
        target,
        "--target-dir",
        str(env.base / "fresh"),
        "--json",
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "rebuilding it from the store first" in result.stderr
    from tests.test_pitr import stop_server

    stop_server(env.base / "fresh")
    shutil.rmtree(env.base / "fresh")
    _r, rows = restore_and_read(env, target, "fresh2")
    assert rows == expected


def test_reconcile_marks_missing_objects_and_verify_reads_back(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    env.cli("backup", "physical")
    names = []
    for i in range(4):
        pg.sql("INSERT INTO ticks(note) VALUES (%s)", (f"rec {i}",))
        names.append(pg.switch_wal())
        time.sleep(0.2)
    pg.wait_archived(names[-1])
    env.drain()
    # no export: the store has no receipts, so a rebuilt catalog cannot trust anything
    lose_the_vm(env)
    report = env.cli_json("catalog", "rebuild")
    assert report["verified"] == 0 and report["unproven"] > 0
    assert env.cli_json("catalog", "restorable")["windows"] == []
    proc = env.cli("catalog", "rebuild", "--verify", "--json")
    assert proc.returncode == 0, proc.stderr
    assert env.cli_json("catalog", "restorable")["windows"] != []
    # an object vanishes from the store: the existing catalog is reconciled
    env.store().delete(f"pg/{env.cluster}/wal/00000001/{names[1]}.zst")
    report = env.cli_json("catalog", "rebuild")
    assert report["missing"] == [f"wal/{names[1]}"]
    summary = env.cli_json("catalog", "restorable")
    assert summary["backups"][0]["broken_at"] == names[1]
    # damage is found by reading back
    key = f"pg/{env.cluster}/wal/00000001/{names[2]}.zst"
    info = env.store().head(key)
    assert info is not None
    env.store().put_bytes(key, b"\x28\xb5\x2f\xfd garbage", dict(info.metadata))
    proc = env.cli("catalog", "rebuild", "--verify-all", "--json", check=False)
    assert proc.returncode == 1 and f"wal/{names[2]}" in proc.stdout
