"""Fault scenarios (issue 15): a real cluster, a RabbitMQ node of the test's own and
moto's S3 server. `make test-faults` runs them; each prints one FAULTS line with its
figures (docs/RELIABILITY.md records them): WAL archived, verified, lost, falsely
verified, time to recover, alert raised.

The shared RabbitMQ node (127.0.0.1:5672) is never stopped: scenario (b) stops the
test's own node. Needs root (tmpfs, runuser); skips with the reason otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgvault.storage.layout import Layout
from tests.conftest import make_bucket
from tests.env import PgvaultEnv
from tests.rabbitnode import PrivateRabbit, RabbitNodeError

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    if os.geteuid() != 0:
        pytest.skip("fault scenarios need root (tmpfs, a private RabbitMQ node, runuser)")
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"))
    try:
        node.start()
    except (RabbitNodeError, OSError, subprocess.SubprocessError) as exc:
        node.close()
        pytest.skip(f"cannot start a private RabbitMQ node: {exc}")
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def fenv(
    rabbit: PrivateRabbit, s3_endpoint: str, pgvault_bin: Path, workdir: Path
) -> Iterator[Any]:
    envs: list[PgvaultEnv] = []

    def factory(prepare: Any = None) -> PgvaultEnv:
        base = workdir / f"fenv{len(envs)}"
        base.mkdir()
        os.chmod(base, 0o755)
        if prepare is not None:
            prepare(base)
        storage = {
            "type": "s3",
            "endpoint_url": s3_endpoint,
            "bucket": make_bucket(s3_endpoint),
            "prefix": "pg",
            "region": "us-east-1",
            "path_style": True,
            "part_size_mb": 5,
        }
        env = PgvaultEnv(base, rabbit.url, storage, pgvault_bin)
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()
        if env.pg is not None:
            env.pg.stop()


def report(scenario: str, **figures: Any) -> None:
    print(f"\nFAULTS {scenario}: " + json.dumps(figures))


def archived_segments(env: PgvaultEnv) -> set[str]:
    """Segments PostgreSQL counts as archived (they are in the spool: the janitor keeps
    them for local_keep_days)."""
    return {
        p.name
        for p in (env.spool / "wal").iterdir()
        if len(p.name) == 24 and not p.name.startswith(".")
    }


def figures(env: PgvaultEnv, archived: set[str]) -> dict[str, int]:
    """verified / lost / falsely verified, against the spool copies and the store."""
    rows = {r["name"]: r for r in env.wal_rows() if r["state"] == "verified"}
    store = env.store()
    layout = Layout("pg", env.cluster)
    false = 0
    for name, row in rows.items():
        spool_copy = env.spool / "wal" / name
        key = layout.key("wal", name, name)
        info = store.head(key)
        sha = hashlib.sha256(spool_copy.read_bytes()).hexdigest() if spool_copy.exists() else None
        if (
            info is None
            or (sha is not None and sha != row["sha256"])
            or info.metadata.get("content-sha256") != row["sha256"]
        ):
            false += 1
    return {
        "wal_archived": len(archived),
        "verified": len(archived & set(rows)),
        "lost": len(archived - set(rows)),
        "falsely_verified": false,
    }


def noise(env: PgvaultEnv, rows: int = 20000) -> str:
    pg = env.pg
    assert pg is not None
    pg.sql("CREATE TABLE IF NOT EXISTS noise (id bigserial, v text)")
    pg.sql(f"INSERT INTO noise(v) SELECT md5(random()::text) FROM generate_series(1, {rows})")
    return pg.switch_wal()


def check_status(env: PgvaultEnv, only: str) -> str:
    proc = env.cli("check", "--only", only, "--json", "--no-alerts", check=False)
    data = json.loads(proc.stdout)
    return str(data["status"])


# -- (a) a full spool ---------------------------------------------------------------------


def _mount_tmpfs(base: Path) -> None:
    spool = base / "spool"
    spool.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(spool)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()[:200]}")


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as fh:
        chunk = b"\xa5" * 65536
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    fd = os.open(filler, os.O_WRONLY | os.O_APPEND)
    try:  # to the last byte
        while True:
            os.write(fd, b"\xa5")
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_full_spool_keeps_wal_and_drains_within_a_minute(fenv: Any) -> None:
    env = fenv(_mount_tmpfs)
    spool = env.spool
    try:
        env.cli("init")
        pg = env.make_pg()
        env.start_pipeline()
        first = noise(env)
        pg.wait_archived(first, 60)
        env.wait_for(
            lambda: first in {r["name"] for r in env.wal_rows() if r["state"] == "verified"},
            60,
            "baseline verified",
        )
        before = archived_segments(env)
        filler = _fill(spool)
        assert os.statvfs(spool).f_bavail == 0
        failed0 = int(pg.one("SELECT failed_count FROM pg_stat_archiver"))
        stuck = noise(env)
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and int(pg.one("SELECT failed_count FROM pg_stat_archiver")) == failed0
        ):
            time.sleep(0.2)
        failed = int(pg.one("SELECT failed_count FROM pg_stat_archiver"))
        assert failed > failed0, "archive_command did not fail on the full spool"
        assert (pg.datadir / "pg_wal" / stuck).exists()  # PostgreSQL keeps the WAL
        assert (pg.datadir / "pg_wal" / "archive_status" / f"{stuck}.ready").exists()
        # by hand, as PostgreSQL runs it: exit 1, one line, nothing published
        proc = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(env.pgvault_bin),
                "--config",
                str(env.config_path),
                "wal-archive",
                f"pg_wal/{stuck}",
                stuck,
            ],
            cwd=pg.datadir,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert archived_segments(env) == before and stuck not in archived_segments(env)
        assert not [p for p in (spool / "wal").iterdir() if p.name.startswith(".")]
        alert = check_status(env, "archiver")
        filler.unlink()
        freed = time.monotonic()
        after = noise(env, 1000)  # PostgreSQL keeps writing; its archiver retries
        pg.wait_archived(after, 60)
        archived = archived_segments(env)
        assert stuck in archived
        env.wait_for(
            lambda: archived <= {r["name"] for r in env.wal_rows() if r["state"] == "verified"},
            60,
            "everything verified within a minute of freeing space",
        )
        recover = time.monotonic() - freed
        got = figures(env, archived)
        report(
            "full_spool",
            **got,
            time_to_recover_s=round(recover, 1),
            archive_failures=failed - failed0,
            alert=f"archiver {alert}",
        )
        assert got["lost"] == 0 and got["falsely_verified"] == 0
        assert recover < 60
        assert alert != "OK"
    finally:
        env.stop_pipeline()
        if env.pg is not None:
            env.pg.stop()
            env.pg = None
        subprocess.run(["umount", "-l", str(spool)], check=False)


# -- (b) the broker node stopped while WAL is archived ------------------------------------


def test_broker_node_stopped_loses_nothing(fenv: Any, rabbit: PrivateRabbit) -> None:
    env = fenv()
    env.cli("init")
    pg = env.make_pg()
    env.start_pipeline()
    first = noise(env, 1000)
    pg.wait_archived(first, 60)
    down = time.monotonic()
    rabbit.stop_app()
    try:
        during = [noise(env, 1000) for _ in range(3)]
        pg.wait_archived(during[-1], 60)  # archive_command does not need the broker
        alert = check_status(env, "queues")
        time.sleep(10)
    finally:
        rabbit.start_app()
    back = time.monotonic()
    outage = back - down
    after = noise(env, 1000)
    pg.wait_archived(after, 60)
    archived = archived_segments(env)
    env.wait_for(
        lambda: archived <= {r["name"] for r in env.wal_rows() if r["state"] == "verified"},
        120,
        "every segment verified after the broker came back",
    )
    recover = time.monotonic() - back
    got = figures(env, archived)
    report(
        "broker_stopped",
        **got,
        outage_s=round(outage, 1),
        time_to_recover_s=round(recover, 1),
        alert=f"queues {alert}",
    )
    assert got["lost"] == 0 and got["falsely_verified"] == 0
    assert alert != "OK"


# -- (c) `backup logical` run as root -----------------------------------------------------


def _owners(root: Path) -> set[str]:
    out = set()
    for dirpath, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(dirpath, name)
            out.add(pwd.getpwuid(path.lstat().st_uid).pw_name)
    return out


def test_backup_logical_as_root_is_written_as_the_service_user(fenv: Any) -> None:
    env = fenv()
    env.use_service_user("postgres")
    env.cli("init")
    env.make_pg()
    env.pg.sql("CREATE TABLE IF NOT EXISTS t (x int)")
    env.pg.sql("INSERT INTO t SELECT generate_series(1, 1000)")
    env.start_pipeline()  # started as root: the daemons switch to postgres
    started = time.monotonic()
    proc = env.cli("backup", "logical", "--db", "postgres")
    assert proc.returncode == 0

    def logical_verified() -> bool:
        out = env.cli_json("catalog", "list", "--kind", "logical")
        return any(a["state"] == "verified" for a in out["artifacts"])

    env.wait_for(logical_verified, 120, "the root-started dump uploaded and verified")
    took = time.monotonic() - started
    owners = (
        _owners(env.spool)
        | _owners(env.base / "var")
        | _owners(Path(env.data["service"]["work_dir"]))
    )
    alert = check_status(env, "spool")
    report(
        "backup_logical_as_root",
        backups=1,
        verified=1,
        lost=0,
        falsely_verified=0,
        time_to_verified_s=round(took, 1),
        owners=sorted(owners),
        alert=f"spool {alert}",
    )
    assert owners == {"postgres"}
    assert alert == "OK"

    # an entry the service user cannot read (left by some root process): the producer
    # alerts on it and `check` is critical at once, instead of an hour of green
    stray = env.spool / "logical" / "postgres" / "20990101T000000Z"
    stray.mkdir(mode=0o700)
    (stray / "manifest.json").write_text("{}")
    status = check_status(env, "spool")
    env.wait_for(
        lambda: "spool entry unreadable" in (env.base / "producer.log").read_text(),
        30,
        "the producer reporting the unreadable entry",
    )
    report("unreadable_spool_entry", alert=f"spool {status}, producer spool_unreadable")
    assert status == "CRITICAL"
