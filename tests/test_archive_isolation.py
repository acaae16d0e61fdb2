"""Restored and drill clusters never write into the production archive (issue 8)."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.conftest import EnvFactory
from tests.test_pitr import prepare, restore_and_read, snapshot, stop_server

pytestmark = pytest.mark.slow


def test_two_restores_in_a_row_each_get_their_own_target(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    env.cli("backup", "physical")
    targets = []
    for i in range(2):
        pg.sql(
            "INSERT INTO ticks(note) SELECT %s || g FROM generate_series(1, 10) g", (f"prod {i} ",)
        )
        pg.switch_wal()
        time.sleep(0.3)
        targets.append((pg.one("SELECT clock_timestamp()").isoformat(), snapshot(pg)))
        time.sleep(0.3)
    pg.wait_archived(pg.switch_wal())
    env.drain()
    spool_before = sorted(p.name for p in (env.spool / "wal").iterdir())
    # first restore to T1: promoted, written to, WAL switched there
    (t1, _state1) = targets[0]
    first_dir = env.base / "first"
    result = env.cli_json("restore", "pitr", "--to", t1, "--target-dir", str(first_dir), "--start")
    assert result["archive_mode"] == "off"
    dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
            conn.execute(
                "INSERT INTO ticks(note) SELECT 'restored copy ' || g FROM generate_series(1, 50) g"
            )
            for _ in range(3):
                conn.execute("SELECT txid_current()")
                conn.execute("SELECT pg_switch_wal()")
            time.sleep(2)  # an archiver, were it on, would have run by now
    finally:
        stop_server(first_dir)
    env.drain()
    # nothing of the restored cluster reached the spool, the store or the catalog
    assert sorted(p.name for p in (env.spool / "wal").iterdir()) == spool_before
    assert env.catalog().query("SELECT name FROM artifacts WHERE kind='history'") == []
    assert [k.key for k in env.store().list(f"pg/{env.cluster}/wal/00000002/")] == []
    # the second restore, to T2, gets production's data at T2
    (t2, state2) = targets[1]
    _result, rows = restore_and_read(env, t2, "second")
    assert rows == state2
    assert not [r for r in rows if r[2].startswith("restored copy")]
