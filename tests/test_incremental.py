"""Incremental base backups on PostgreSQL 17 (summarize_wal, pg_basebackup --incremental,
pg_combinebackup): a pgbench-loaded cluster, a full backup and two incrementals with
changes between them; PITR to a time after each is exact; the second incremental is a
small fraction of the full; retention keeps a kept incremental's parents and expires a
chain together; `catalog rebuild` from the store restores the chain links (the same
restorable answers, a restore from the store alone); a drill over the chain; refused
on 15 with exit 2; a full backup with a warning when summarize_wal is off; a chain whose
middle member was forged (its archive's bytes, or one member's bytes with every sha256
record rewritten) is refused, nothing started, the target removed."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.pgcluster import PgCluster, as_postgres, pg_bin_for
from tests.test_pitr import mark_target, snapshot
from tests.test_rebuild import lose_the_vm

DIGEST = (
    "SELECT count(*) || ':' || md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) "
    "FROM pgbench_accounts"
)


def _bin17() -> Path:
    found = pg_bin_for(17)
    if found is None:
        pytest.skip("PostgreSQL 17 not installed: run scripts/pg-binaries.sh 17")
    return found


def _cluster(env: PgvaultEnv, bin_dir: Path, extra: dict[str, str]) -> PgCluster:
    env.cli("init")
    pg = PgCluster(env.base, bin_dir=bin_dir)
    pg.initdb(env.archive_command(), extra)
    pg.start()
    env.pg = pg
    env.data.setdefault("postgres", {}).update(
        host="127.0.0.1", port=pg.port, user="postgres", bin_dir=str(bin_dir)
    )
    env.write_config()
    return pg


def _pgbench(pg: PgCluster, bin_dir: Path, *args: str) -> None:
    as_postgres(
        [str(bin_dir / "pgbench"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
         *args, "postgres"],
        check=True,
    )  # fmt: skip


def _change(pg: PgCluster, step: int) -> None:
    """A day-like change: 2% of the accounts (a contiguous range: few pages), some ticks."""
    first = step * 100_000
    pg.sql(
        "UPDATE pgbench_accounts SET abalance = abalance + %s WHERE aid BETWEEN %s AND %s",
        (step, first, first + 8_000),
    )
    pg.sql("INSERT INTO ticks(note) SELECT %s || g FROM generate_series(1, 20) g", (f"s{step} ",))


def _mark(env: PgvaultEnv, pg: PgCluster, note: str) -> tuple[str, tuple[Any, str]]:
    target, rows = mark_target(env, pg, note)
    # mark_target drained after the snapshot: the digest is taken at the same moment as
    # rows, no write to pgbench_accounts happened in between
    return target, (rows, pg.one(DIGEST))


def _restore_and_check(env: PgvaultEnv, target: str, expected: tuple[Any, str], name: str) -> Any:
    target_dir = env.base / name
    result = env.cli_json(
        "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start", "--json"
    )
    try:
        dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
        with psycopg.connect(dsn) as conn:
            digest = conn.execute(DIGEST).fetchone()
        assert (snapshot(None, dsn), digest[0] if digest else None) == expected
    finally:
        as_postgres([str(_bin17() / "pg_ctl"), "-D", str(target_dir), "-m", "immediate", "stop"])
    return result


def _backup(env: PgvaultEnv, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = env.cli_json("backup", "physical", *args, "--json")
    return out


@pytest.mark.slow
def test_incremental_chain_end_to_end(make_env: EnvFactory) -> None:
    bin17 = _bin17()
    env = make_env("local")
    pg = _cluster(env, bin17, {"summarize_wal": "on"})
    pg.sql(
        "CREATE TABLE ticks (id serial PRIMARY KEY, inserted_at timestamptz "
        "DEFAULT clock_timestamp(), note text)"
    )
    _pgbench(pg, bin17, "-i", "-s", "4", "-q")

    full = _backup(env)
    assert full["backup_type"] == "full" and full["incremental"] is False
    _change(pg, 1)
    t1, x1 = _mark(env, pg, "after the full")
    inc1 = _backup(env, "--incremental")
    assert inc1["incremental"] is True, inc1.get("fallback_reason")
    assert inc1["parent_id"] == full["backup_id"]
    assert inc1["chain"] == [full["backup_id"], inc1["backup_id"]]
    _change(pg, 2)
    t2, x2 = _mark(env, pg, "after incremental 1")
    inc2 = _backup(env, "--incremental")
    assert inc2["parent_id"] == inc1["backup_id"]
    assert inc2["chain"] == [full["backup_id"], inc1["backup_id"], inc2["backup_id"]]
    _change(pg, 3)
    t3, x3 = _mark(env, pg, "after incremental 2")
    env.drain()

    rows = {
        a["name"]: a for a in env.cli_json("catalog", "list", "--kind", "physical")["artifacts"]
    }
    assert all(r["state"] == "verified" for r in rows.values())
    assert rows[inc2["backup_id"]]["meta"]["parent_id"] == inc1["backup_id"]
    # the second incremental holds the changed blocks only
    sizes = {n: {f["name"]: f["size"] for f in r["files"]} for n, r in rows.items()}
    assert rows[inc2["backup_id"]]["size"] < 0.25 * rows[full["backup_id"]]["size"], sizes

    answer = env.cli_json("catalog", "restorable", "--at", t3)
    chain = [c["backup_id"] for c in answer["plan"]["chain"]]
    assert chain == inc2["chain"]
    assert answer["plan"]["chain_bytes"] == sum(c["size"] for c in answer["plan"]["chain"])

    text = env.cli("catalog", "restorable", "--at", t3).stdout
    assert text.startswith("yes: incremental chain of 3 backups"), text
    assert all(b in text for b in inc2["chain"])
    assert (
        f"base backup {inc2['backup_id']} (incremental, chain of 3): usable"
        in env.cli("catalog", "restorable").stdout
    )

    r1 = _restore_and_check(env, t1, x1, "r1")
    assert r1["backup_id"] == full["backup_id"] and r1["chain"] == [full["backup_id"]]
    r2 = _restore_and_check(env, t2, x2, "r2")
    assert r2["chain"] == inc1["chain"]
    r3 = _restore_and_check(env, t3, x3, "r3")
    assert r3["chain"] == inc2["chain"]

    # retention five weeks later: the newest (incremental 2) stays, so do its parents
    later = (datetime.now(UTC) + timedelta(weeks=5)).isoformat()
    plan = env.cli_json("retention", "apply", "--dry-run", "--now", later, "--json")
    kept = {k["name"]: k["reasons"] for k in plan["artifacts"]["physical"]["keep"]}
    assert set(kept) == set(inc2["chain"]), plan
    assert any("incremental" in why for why in kept[full["backup_id"]])

    # a drill over the chain, from the store
    drill = env.cli_json("drill", "pitr", "--json")
    assert drill["ok"] is True and drill["backup_id"] == inc2["backup_id"], drill

    # the VM is gone: the catalog from the store has the same links and answers
    env.cli("producer", "--once")
    before = env.cli_json("catalog", "restorable", "--at", t2)
    lose_the_vm(env)
    report = env.cli_json("catalog", "rebuild")
    assert report["unproven"] == 0, report
    after = env.cli_json("catalog", "restorable", "--at", t2)
    assert after["plan"] == before["plan"]
    _restore_and_check(env, t2, x2, "r2-from-store")

    # the [physical] policy, without flags: "auto" takes an incremental against the newest
    # verified backup, until the chain holds max_chain incrementals
    env.data["physical"] = {"incremental": "auto", "max_chain": 3}
    env.write_config()
    inc3 = _backup(env)
    assert inc3["incremental"] is True and inc3["parent_id"] == inc2["backup_id"], inc3
    env.drain()
    policy_full = _backup(env)
    assert policy_full["incremental"] is False and "max_chain" in policy_full["full_reason"]
    assert "fallback_reason" not in policy_full
    env.drain()

    # summarize_wal off: a full backup, with a one-line warning and the reason in --json
    pg.sql("ALTER SYSTEM SET summarize_wal = off")
    pg.sql("SELECT pg_reload_conf()")
    env.wait_for(lambda: pg.one("SHOW summarize_wal") == "off", what="summarize_wal off")
    proc = env.cli("backup", "physical", "--incremental", "--json")
    out = json.loads(proc.stdout)
    assert out["incremental"] is False and out["backup_type"] == "full"
    assert "summarize_wal" in out["fallback_reason"]
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "summarize_wal" in warning[0]
    env.drain()
    # newer fulls: the old chain expires together, no incremental left without its full
    plan = env.cli_json("retention", "apply", "--dry-run", "--now", later, "--json")
    removed = {r["name"] for r in plan["artifacts"]["physical"]["remove"]}
    assert removed == set(inc3["chain"]) | {policy_full["backup_id"]}, plan


def test_incremental_refused_before_17(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = env.make_pg()
    assert int(pg.one("SHOW server_version_num")) < 170000
    proc = env.cli("backup", "physical", "--incremental", check=False)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "PostgreSQL 17" in lines[0], proc.stderr
    assert not any((env.spool / "physical").glob("2*"))


def test_incremental_needs_a_verified_parent(make_env: EnvFactory) -> None:
    """No verified backup yet: --incremental falls back to a full one, saying why."""
    env = make_env("local")
    _cluster(env, _bin17(), {"summarize_wal": "on"})
    proc = env.cli("backup", "physical", "--incremental")
    assert "warning: taking a full backup" in proc.stderr
    assert "no verified base backup" in proc.stderr
    assert proc.returncode == 0 and isinstance(proc, subprocess.CompletedProcess)


def test_manifest_chain_fields() -> None:
    """Old manifests load as full backups; an incremental is version 3 with a chain that
    ends [parent, self]; anything inconsistent is refused in one line."""
    from pgvault.errors import ManifestError
    from pgvault.schemas.manifest import parse_physical
    from tests.test_manifest import V1_PHYSICAL

    old = parse_physical(V1_PHYSICAL, "p")
    assert (old.backup_type, old.parent_id, old.chain_ids) == ("full", None, (old.backup_id,))
    base = json.loads(old.to_json())
    inc = base | {
        "manifest_version": 3,
        "backup_type": "incremental",
        "parent_id": "20240401T030000Z",
        "chain": ["20240301T030000Z", "20240401T030000Z", old.backup_id],
    }
    m = parse_physical(json.dumps(inc), "p")
    assert m.chain_ids[-2:] == ("20240401T030000Z", old.backup_id)
    assert parse_physical(m.to_json(), "p") == m
    for bad in (
        inc | {"manifest_version": 2},  # an older pgvault must refuse it
        inc | {"chain": ["20240301T030000Z", old.backup_id]},  # parent not before self
        {k: v for k, v in inc.items() if k != "parent_id"},
        base | {"parent_id": "20240401T030000Z"},  # a full backup has no parent
    ):
        with pytest.raises(ManifestError) as info:
            parse_physical(json.dumps(bad), "physical/x")
        assert "\n" not in str(info.value)


@pytest.mark.slow
def test_incremental_chain_with_a_tablespace(make_env: EnvFactory) -> None:
    """A tablespace in the full and the incremental: pg_combinebackup -T puts it into the
    restore's own directory; the source tablespace is never touched."""
    from tests.pgcluster import chown_pg
    from tests.test_tablespaces import tree_digest

    bin17 = _bin17()
    env = make_env("local")
    pg = _cluster(env, bin17, {"summarize_wal": "on"})
    location = env.base / "prod_ts"
    location.mkdir()
    chown_pg(location)
    pg.sql(f"CREATE TABLESPACE ts LOCATION '{location}'")
    pg.sql("CREATE TABLE cold (id int PRIMARY KEY, note text) TABLESPACE ts")
    pg.sql("INSERT INTO cold SELECT g, 'v1 ' || g FROM generate_series(1, 20000) g")
    _backup(env)
    env.drain()
    pg.sql("UPDATE cold SET note = 'v2' WHERE id BETWEEN 100 AND 300")
    inc = _backup(env, "--incremental")
    assert inc["incremental"] is True, inc
    expected = [tuple(r) for r in pg.sql("SELECT id, note FROM cold ORDER BY id")]
    pg.sql("UPDATE cold SET note = 'after the incremental'")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    pg.stop()
    before = tree_digest(location)
    target_dir = env.base / "restored"
    result = env.cli_json(
        "restore", "pitr", "--backup", inc["backup_id"], "--target-dir", str(target_dir),
        "--start", "--target-action", "promote",
    )  # fmt: skip
    try:
        assert result["chain"] == inc["chain"]
        (ts,) = result["tablespaces"]
        assert Path(ts["restored_to"]).is_relative_to(target_dir)
        dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT id, note FROM cold ORDER BY id").fetchall()
            assert [tuple(r) for r in rows] == expected
            conn.execute("UPDATE cold SET note = 'written by the copy'")
            conn.execute("CHECKPOINT")
            (where,) = conn.execute(
                "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'"
            ).fetchone() or (None,)
        assert where == ts["restored_to"]
    finally:
        as_postgres([str(bin17 / "pg_ctl"), "-D", str(target_dir), "-m", "immediate", "stop"])
    assert tree_digest(location) == before


def _processes_on(directory: Path) -> list[str]:
    """Command lines of running processes that name `directory` (a postgres -D DIR)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if any(str(directory).encode() in a for a in args):
            found.append(b" ".join(args).decode(errors="replace"))
    return found


def _refused(env: PgvaultEnv, bin17: Path, target: str, name: str) -> tuple[str, str]:
    """`restore pitr --start` of a chain with a forged member: a non-zero exit, the error
    in one line, no target left, no staging left, no server started; the error line and stderr."""
    target_dir = env.base / name
    proc = env.cli(
        "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start", "--json",
        check=False,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("pgvault: error:")]
    assert proc.returncode != 0 and len(errors) == 1, (proc.returncode, proc.stderr)
    assert '"ok": true' not in proc.stdout and '"started": true' not in proc.stdout
    assert not target_dir.exists(), sorted(p.name for p in target_dir.iterdir())
    assert not list(env.base.glob(f".{name}.*")), "staging left behind"
    status = subprocess.run(
        [str(bin17 / "pg_ctl"), "status", "-D", str(target_dir)], capture_output=True, text=True
    )
    assert status.returncode != 0 and "server is running" not in status.stdout
    assert not _processes_on(target_dir)
    return errors[0], proc.stderr


def test_a_forged_chain_member_is_refused(make_env: EnvFactory) -> None:
    """A chain full -> incremental 1 -> incremental 2, incremental 1 forged twice: (a) bytes
    of its base.tar.zst changed in the spool and the store: the archive's sha256 refuses
    it; (b) one relation file's bytes changed and the archive rebuilt, its sha256 and size
    rewritten in the spool manifest, the catalog row and the store object's metadata (from
    the spool copy, then from the store alone): only backup_manifest refuses the member.
    Never started, never ok, the target removed."""
    from tests.chainforge import ARCHIVE, flip_bytes, forge_member

    bin17 = _bin17()
    env = make_env("local")
    pg = _cluster(env, bin17, {"summarize_wal": "on"})
    pg.sql("CREATE TABLE ticks (id serial PRIMARY KEY, inserted_at timestamptz "
           "DEFAULT clock_timestamp(), note text)")  # fmt: skip
    _pgbench(pg, bin17, "-i", "-s", "2", "-q")
    full = _backup(env)
    env.drain()
    _change(pg, 1)
    inc1 = _backup(env, "--incremental")
    assert inc1["incremental"] is True, inc1.get("fallback_reason")
    env.drain()
    _change(pg, 1)
    inc2 = _backup(env, "--incremental")
    assert inc2["chain"] == [full["backup_id"], inc1["backup_id"], inc2["backup_id"]]
    target, _ = _mark(env, pg, "after incremental 2")
    pg.stop()
    spooled = env.spool / "physical" / inc1["backup_id"] / ARCHIVE
    original = spooled.read_bytes()

    # (a) the archive's own bytes: its sha256 (spool copy, then the store) refuses it
    flip_bytes(env, inc1["backup_id"])
    error, stderr = _refused(env, bin17, target, "flipped")
    assert f"{inc1['backup_id']}/{ARCHIVE}: stored bytes do not match (sha256" in error, error
    assert "spool copy of base.tar.zst does not match its sha256" in stderr

    # (b) a consistent forgery: the archive passes its sha256, the member does not
    member = forge_member(env, inc1["backup_id"], original)
    error, stderr = _refused(env, bin17, target, "forged")
    assert "spool copy" not in stderr  # the spool copy passed its (forged) sha256
    assert member in error and "SHA-256" in error and "backup_manifest" in error, error
    assert f"backup {inc1['backup_id']} of the chain" in error, error  # which one was forged
    # the same forgery read from the store alone (no spool copy)
    spooled.unlink()
    error, _ = _refused(env, bin17, target, "forged-store")
    assert member in error and "backup_manifest" in error, error
