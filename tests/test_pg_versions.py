"""The core path on every supported PostgreSQL major version (14-18): WAL archived through
the pipeline, a logical backup restored with equal content, a physical backup, PITR exact
at a recorded time and `catalog restorable`. The binaries come from scripts/pg-binaries.sh
(.cache/pg/<major>/) or Debian's /usr/lib/postgresql/<major>/bin."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import psycopg
import pytest

from pgvault.errors import PostgresError
from pgvault.pgtools import bin_dir_for, find_tool, tool_major
from tests.conftest import EnvFactory
from tests.logical_data import create_database, fingerprint
from tests.pgcluster import PgCluster, as_postgres, pg_bin_for
from tests.test_pitr import mark_target, snapshot

MAJORS = (14, 15, 16, 17, 18)


def _bin_or_skip(major: int) -> Path:
    found = pg_bin_for(major)
    if found is None:
        pytest.skip(f"PostgreSQL {major} not installed: run scripts/pg-binaries.sh {major}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("major", MAJORS)
def test_core_path_on_each_major_version(make_env: EnvFactory, major: int) -> None:
    bin_dir = _bin_or_skip(major)
    env = make_env("local")
    env.cli("init")
    pg = PgCluster(env.base, bin_dir=bin_dir)
    pg.initdb(env.archive_command())
    pg.start()
    env.pg = pg
    assert pg.one("SHOW server_version_num").startswith(str(major))
    env.data.setdefault("postgres", {}).update(
        host="127.0.0.1", port=pg.port, user="postgres", bin_dir=str(bin_dir), databases=["shop"]
    )
    env.write_config()
    pg.sql(
        "CREATE TABLE ticks (id serial PRIMARY KEY, inserted_at timestamptz "
        "DEFAULT clock_timestamp(), note text)"
    )
    pg.sql("INSERT INTO ticks(note) SELECT 'before backup ' || g FROM generate_series(1, 50) g")
    create_database(pg, "shop", k=1)

    # logical: dump, ship, restore into another database, equal content
    out = env.cli_json("backup", "logical")
    (dump,) = out["backups"]
    assert dump["ok"] is True, out
    env.drain()
    env.cli_json("restore", "logical", "--db", "shop", "--target-db", "shop_copy")
    assert fingerprint(pg, "shop_copy") == fingerprint(pg, "shop")

    # physical, then a recorded target time with changes after it
    env.cli("backup", "physical")
    target, expected = mark_target(env, pg, f"the target on {major}")
    pg.sql("INSERT INTO ticks(note) SELECT 'after the target ' || g FROM generate_series(1, 9) g")
    pg.wait_archived(pg.switch_wal())
    env.drain()

    (backup,) = env.cli_json("catalog", "list", "--kind", "physical")["artifacts"]
    assert backup["state"] == "verified"
    assert backup["meta"]["pg_major"] == major
    assert backup["meta"]["pg_version_num"] // 10000 == major
    assert backup["meta"]["verification"]["pg_verifybackup"] is (major >= 18)
    assert {f["name"] for f in backup["files"]} >= {"base.tar.zst", "pg_wal.tar.zst"}
    wal = [r for r in env.wal_rows() if r["wal_type"] == "segment"]
    assert wal and all(r["state"] == "verified" for r in wal)
    assert any(r["last_commit"] for r in wal)  # pg_waldump of this version read them

    answer = env.cli_json("catalog", "restorable", "--at", target)
    assert answer["restorable"] is True, answer

    target_dir = env.base / "restored"
    result = env.cli_json(
        "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start"
    )
    try:
        assert (target_dir / "PG_VERSION").read_text().strip() == str(major)
        dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
        assert snapshot(None, dsn) == expected
        with psycopg.connect(dsn) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) // 10000 == major
        assert result["restored_to"] is not None and result["restored_to"] <= target
    finally:
        as_postgres([str(bin_dir / "pg_ctl"), "-D", str(target_dir), "-m", "immediate", "stop"])


def test_tools_of_the_servers_major_version_are_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured dir, then PATH, then the Debian layout; an older tool is refused in one
    line naming the version needed; a restore's directory is searched beyond bin_dir."""
    have = {m: pg_bin_for(m) for m in MAJORS}
    if sum(1 for b in have.values() if b is not None) < 2:
        pytest.skip("needs two PostgreSQL versions: run scripts/pg-binaries.sh")
    (old, old_bin), (new, new_bin) = [(m, b) for m, b in have.items() if b is not None][:2]
    assert old_bin is not None and new_bin is not None
    # configured: the only place looked; an older pg_dump is refused in one line
    assert find_tool("pg_dump", str(old_bin), old) == str(old_bin / "pg_dump")
    assert find_tool("pg_dump", str(new_bin), old) == str(new_bin / "pg_dump")  # newer dumps
    with pytest.raises(PostgresError) as refused:
        find_tool("pg_dump", str(old_bin), new)
    message = str(refused.value)
    assert "\n" not in message and f"needs pg_dump {new} or newer" in message
    with pytest.raises(PostgresError) as exact:
        find_tool("pg_basebackup", str(new_bin), old)
    assert f"needs pg_basebackup {old}" in str(exact.value)
    # empty bin_dir: PATH decides; the matching major is picked among several
    monkeypatch.setenv("PATH", os.pathsep.join([str(old_bin), str(new_bin), "/usr/bin", "/bin"]))
    assert tool_major(find_tool("pg_waldump", "", new)) == new
    assert tool_major(find_tool("pg_waldump", "", old)) == old
    # a restore of a backup taken on `old` while the server (bin_dir) is `new`
    assert bin_dir_for(old, str(new_bin), "postgres") == str(old_bin)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PostgresError) as missing:
        bin_dir_for(99, str(new_bin), "postgres")
    assert "PostgreSQL 99 needs postgres 99" in str(missing.value)


def test_fourteen_has_no_client_zstd_and_in_place_tablespaces() -> None:
    """What pgvault relies on per version: 14's pg_basebackup only gzips (so pgvault
    compresses the tars itself), and 14 supports in-place tablespaces (empty location,
    under allow_in_place_tablespaces), which the tablespace guard replays into."""
    from pgvault.producers.basebackup_run import client_zstd

    bin14 = _bin_or_skip(14)
    assert client_zstd(str(bin14 / "pg_basebackup")) is False
    for major in (16, 17, 18):
        other = pg_bin_for(major)
        if other is not None:
            assert client_zstd(str(other / "pg_basebackup")) is True
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"pgvault-t14-{os.getpid()}-{time.time_ns()}"
    pg = PgCluster(base, bin_dir=bin14)
    try:
        pg.initdb(None, {"allow_in_place_tablespaces": "on"})
        pg.start()
        pg.sql("CREATE TABLESPACE inplace LOCATION ''")
        oid = pg.one("SELECT oid FROM pg_tablespace WHERE spcname = 'inplace'")
        assert (pg.datadir / "pg_tblspc" / str(oid)).is_dir()
        assert not (pg.datadir / "pg_tblspc" / str(oid)).is_symlink()
        pg.sql("CREATE TABLE t (x int) TABLESPACE inplace")
        pg.sql("INSERT INTO t VALUES (1)")
        assert pg.one("SELECT count(*) FROM t") == 1
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)
