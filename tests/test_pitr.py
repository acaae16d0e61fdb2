"""Physical backups and point-in-time recovery against real clusters: restored data is
compared with what the table held at each target time."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.pgcluster import PG_BIN, as_postgres

pytestmark = pytest.mark.slow


def prepare(env: PgvaultEnv) -> Any:
    env.cli("init")
    pg = env.make_pg()
    pg.sql(
        "CREATE TABLE ticks (id serial PRIMARY KEY, inserted_at timestamptz "
        "DEFAULT clock_timestamp(), note text)"
    )
    pg.sql("INSERT INTO ticks(note) SELECT 'before backup ' || g FROM generate_series(1, 50) g")
    return pg


def snapshot(pg: Any, dsn: str | None = None) -> list[tuple[Any, ...]]:
    query = "SELECT id, inserted_at, note FROM ticks ORDER BY id"
    if dsn is None:
        return [tuple(r) for r in pg.sql(query)]
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(query).fetchall()]


def mark_target(env: PgvaultEnv, pg: Any, note: str) -> tuple[str, list[Any]]:
    """Commit `note`; return a time just after it and the table as it is then; archive and
    drain, so that time is restorable from the catalog."""
    pg.sql("INSERT INTO ticks(note) VALUES (%s)", (note,))
    pg.switch_wal()
    time.sleep(0.3)
    target = pg.one("SELECT clock_timestamp()").isoformat()
    expected = snapshot(pg)
    pg.wait_archived(pg.switch_wal())
    env.drain()
    return target, expected


def stop_server(datadir: Path) -> None:
    as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"])


def restore_and_read(env: PgvaultEnv, target: str, name: str) -> tuple[dict[str, Any], list[Any]]:
    target_dir = env.base / name
    result = env.cli_json(
        "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start"
    )
    try:
        dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
        rows = snapshot(None, dsn)
        with psycopg.connect(dsn) as conn:
            archive_mode = conn.execute("SHOW archive_mode").fetchone()[0]
        result["archive_mode_live"] = archive_mode
    finally:
        stop_server(target_dir)
    return result, rows


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_restore_to_three_points_in_time_matches_the_table(
    make_env: EnvFactory, storage: str
) -> None:
    env = make_env(storage)
    pg = prepare(env)
    env.cli("backup", "physical")
    states: list[tuple[str, list[Any]]] = []
    for i in range(3):
        pg.sql(
            "INSERT INTO ticks(note) SELECT %s || g FROM generate_series(1, 20) g", (f"round {i} ",)
        )
        pg.switch_wal()
        time.sleep(0.3)
        instant = pg.one("SELECT clock_timestamp()")
        states.append((instant.isoformat(), snapshot(pg)))
        time.sleep(0.3)
        pg.sql(
            "INSERT INTO ticks(note) SELECT %s || g FROM generate_series(1, 7) g", (f"after {i} ",)
        )
    pg.wait_archived(pg.switch_wal())
    env.drain()
    for i, (instant, expected) in enumerate(states):
        answer = env.cli_json("catalog", "restorable", "--at", instant)
        assert answer["restorable"] is True, answer
        result, rows = restore_and_read(env, instant, f"restore{i}")
        assert rows == expected, f"restore to T{i + 1} differs from the table at T{i + 1}"
        assert result["archive_mode"] == "off" and result["archive_mode_live"] == "off"
        assert result["restored_to"] is not None and result["restored_to"] <= instant
        if storage == "local":
            shutil.rmtree(env.base / f"restore{i}")


def test_a_base_backup_restores_to_its_consistent_point(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    pg.sql("CREATE UNLOGGED TABLE scratch_u (x int)")  # issue 16 §6
    pg.sql("INSERT INTO scratch_u SELECT generate_series(1, 8)")
    at_backup = snapshot(pg)
    env.cli("backup", "physical")
    pg.sql("INSERT INTO ticks(note) VALUES ('after the backup')")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    (backup,) = env.cli_json("catalog", "list", "--kind", "physical")["artifacts"]
    target_dir = env.base / "as-it-was"
    result = env.cli_json(
        "restore", "pitr", "--backup", backup["name"], "--target-dir", str(target_dir), "--start"
    )
    try:
        dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
        assert snapshot(None, dsn) == at_backup
        assert result["target"] == "immediate" and result["segments"] == 0
        # PostgreSQL empties unlogged tables in any restore: the report says so
        assert result["unlogged"] == [
            {"db": "postgres", "schema": "public", "name": "scratch_u", "kind": "table"}
        ]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM scratch_u").fetchone() == (0,)
    finally:
        stop_server(target_dir)
    bad = env.cli("restore", "pitr", "--target-dir", str(env.base / "x"), check=False)
    assert bad.returncode == 2 and "--backup" in bad.stderr


def test_restorable_before_first_backup_and_across_a_gap(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    before = pg.one("SELECT clock_timestamp()").isoformat()
    time.sleep(0.2)
    env.cli("backup", "physical")
    names = []
    for i in range(4):
        pg.sql("INSERT INTO ticks(note) VALUES (%s)", (f"gap test {i}",))
        names.append(pg.switch_wal())
        time.sleep(0.2)
    pg.wait_archived(names[-1])
    env.drain()
    late = pg.one("SELECT max(inserted_at) FROM ticks").isoformat()
    proc = env.cli("catalog", "restorable", "--at", before, check=False)
    assert proc.returncode == 1 and proc.stdout.startswith("no:")
    assert env.cli_json("catalog", "restorable", "--at", late)["restorable"] is True
    # lose one segment in the middle: store object and spool copy
    victim = names[1]
    env.store().delete(f"pg/{env.cluster}/wal/00000001/{victim}.zst")
    (env.spool / "wal" / victim).unlink()
    env.cli("catalog", "verify", "--kind", "wal")
    env.drain()
    summary = env.cli_json("catalog", "restorable")
    (backup,) = summary["backups"]
    assert backup["broken_at"] == victim
    answer = env.cli_json("catalog", "restorable", "--at", late, ok_codes=(1,))
    assert answer["restorable"] is False and answer["nearest"]["before"] is not None
    assert answer["nearest"]["before"] < late
    refused = env.cli(
        "restore", "pitr", "--to", late, "--target-dir", str(env.base / "r"), check=False
    )
    assert refused.returncode == 1 and "not restorable" in refused.stderr
    assert not (env.base / "r").exists()


def test_pitr_drill_restores_from_the_store_and_records_rto(make_env: EnvFactory) -> None:
    env = make_env("s3")
    pg = prepare(env)
    pg.sql("CREATE UNLOGGED TABLE scratch_u (x int)")
    env.cli("backup", "physical")
    for i in range(3):
        pg.sql("INSERT INTO ticks(note) VALUES (%s)", (f"drill {i}",))
        time.sleep(0.3)
        pg.switch_wal()
    pg.wait_archived(pg.switch_wal())
    env.drain()
    scratch = env.base / "scratch"
    scratch.mkdir()
    result = env.cli_json("drill", "pitr", "--scratch-dir", str(scratch), "--seed", "7")
    assert result["ok"] is True, result
    assert result["details"]["sanity_query"] == "ok" and result["details"]["databases"] >= 1
    assert result["details"]["unlogged"] == [
        {"db": "postgres", "schema": "public", "name": "scratch_u", "kind": "table"}
    ]
    assert result["duration_s"] > 0
    assert list(scratch.iterdir()) == []  # nothing left behind
    cat = env.catalog()
    (drill,) = cat.query("SELECT * FROM drills")
    assert drill["kind"] == "pitr" and drill["result"] == "ok" and drill["duration_s"] > 0
    # damage one WAL object in the store: the drill (store only) must fail and alert
    store = env.store()
    victims = [r for r in env.wal_rows() if r["wal_type"] == "segment"]
    for row in victims:
        key = f"pg/{env.cluster}/wal/00000001/{row['name']}.zst"
        info = store.head(key)
        assert info is not None
        store.put_bytes(key, b"garbage", dict(info.metadata))
    proc = env.cli("drill", "pitr", "--scratch-dir", str(scratch), "--seed", "7", check=False)
    assert proc.returncode == 1 and "FAILED" in proc.stdout
    rows = cat.query("SELECT result FROM drills ORDER BY id")
    assert [r["result"] for r in rows] == ["ok", "failed"]
    alerts = [a for a in env.broker().take(env.broker().topology.queue("alert"))]
    assert any(b'"drill_failed"' in a.body for a in alerts)
    assert list(scratch.iterdir()) == []


def test_restore_after_a_timeline_switch_follows_the_new_timeline(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    env.cli("backup", "physical")
    pg.sql("INSERT INTO ticks(note) SELECT 'tli1 ' || g FROM generate_series(1, 10) g")
    pg.switch_wal()
    time.sleep(0.3)
    t1 = pg.one("SELECT clock_timestamp()").isoformat()
    at_t1 = snapshot(pg)
    time.sleep(0.3)
    pg.sql("INSERT INTO ticks(note) SELECT 'lost after t1 ' || g FROM generate_series(1, 5) g")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    # the old primary dies; the restore to t1 becomes the new primary on timeline 2
    pg.stop("immediate")
    new_dir = env.base / "newprimary"
    result = env.cli_json(
        "restore", "pitr", "--to", t1, "--target-dir", str(new_dir), "--start", "--as-primary"
    )
    assert result["archive_mode"] == "on"
    dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert (
                conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0] == 2
            )
            conn.execute("INSERT INTO ticks(note) SELECT 'tli2 ' || g FROM generate_series(1, 8) g")
            conn.execute("SELECT pg_switch_wal()")
            time.sleep(0.3)
            t2 = conn.execute("SELECT clock_timestamp()").fetchone()[0].isoformat()
            expected = [
                tuple(r)
                for r in conn.execute(
                    "SELECT id, inserted_at, note FROM ticks ORDER BY id"
                ).fetchall()
            ]
            conn.execute("INSERT INTO ticks(note) VALUES ('after t2')")
            last = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
                if done and done >= last:
                    break
                time.sleep(0.2)
    finally:
        stop_server(new_dir)
    env.drain()
    history = [r for r in env.catalog().query("SELECT * FROM artifacts WHERE kind='history'")]
    assert [h["name"] for h in history] == ["00000002.history"]
    assert history[0]["state"] == "verified"
    timelines = env.catalog().query("SELECT timeline, parent, is_current FROM timelines")
    assert {(t["timeline"], t["parent"], t["is_current"]) for t in timelines} == {(2, 1, 1)}
    answer = env.cli_json("catalog", "restorable", "--at", t2)
    assert answer["restorable"] is True and answer["plan"]["timeline"] == 2
    # the old timeline's window still ends at the branch point: t1 stays restorable
    assert env.cli_json("catalog", "restorable", "--at", t1)["restorable"] is True
    _result, rows = restore_and_read(env, t2, "after-switch")
    assert rows == expected
    assert [r for r in rows if r[2].startswith("lost after t1")] == []
    assert rows[: len(at_t1)] == at_t1


def test_socket_directory_goes_when_the_server_stops(make_env: EnvFactory) -> None:
    """The restored server's socket directory is removed when pgvault stops the server
    (or the server stops itself at the target), and by the printed stop line."""
    import shlex
    import subprocess

    from pgvault.restore.server import RestoredServer

    env = make_env("local")
    prepare(env)
    env.cli("backup", "physical")
    env.drain()
    (backup,) = env.cli_json("catalog", "list", "--kind", "physical")["artifacts"]
    # the server stops itself at the target: nothing of it is left running or in /tmp
    shut = env.cli_json(
        "restore", "pitr", "--backup", backup["name"], "--target-dir", str(env.base / "shut"),
        "--start", "--target-action", "shutdown",
    )  # fmt: skip
    assert shut["started"] and not Path(shut["socket_dir"]).exists()
    # pgvault stops a server it started
    result = env.cli_json(
        "restore", "pitr", "--backup", backup["name"], "--target-dir", str(env.base / "a"),
        "--start",
    )  # fmt: skip
    sock = Path(result["socket_dir"])
    assert len(bytes(sock / f".s.PGSQL.{result['port']}")) <= 107
    assert (sock / f".s.PGSQL.{result['port']}").exists()
    server = RestoredServer(env.base / "a", result["port"], str(PG_BIN), "postgres", sock)
    server.stop()
    assert not server.running() and not sock.exists()
    # the stop line printed after --start stops the server and removes the directory
    proc = env.cli(
        "restore", "pitr", "--backup", backup["name"], "--target-dir", str(env.base / "b"),
        "--start",
    )  # fmt: skip
    (stop,) = [ln.split(":", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("stop:")]
    (sock_line,) = [ln for ln in proc.stdout.splitlines() if "socket directory" in ln]
    sock = Path(sock_line.rsplit(" ", 1)[1])
    assert sock.is_dir()
    try:
        subprocess.run(["sh", "-c", stop], check=True, capture_output=True, timeout=120)
    finally:
        stop_server(env.base / "b")
    assert not sock.exists(), shlex.quote(str(sock))
