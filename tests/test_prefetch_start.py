"""`restore pitr --start` starts the WAL prefetcher before the server (issue 18): the
first segments replay reads are served from the verified queue (walget's `.served`
record), the queue belongs to the server's user, and no prefetcher outlives recovery."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import psycopg
import pytest

from pgvault.restore import walqueue
from tests.conftest import EnvFactory
from tests.pgcluster import PG_USER
from tests.test_pitr import mark_target, prepare, snapshot, stop_server
from tests.test_wal_prefetch import wait_for

pytestmark = pytest.mark.slow


def prefetchers(qdir: Path) -> list[int]:
    """Processes running `wal-restore --prefetch-daemon QDIR` for this queue."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--prefetch-daemon" in argv and str(qdir).encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_restore_pitr_serves_the_first_segments_from_the_queue(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    env.cli("backup", "physical")
    for i in range(4):  # a few segments of WAL to replay after the backup
        pg.sql("INSERT INTO ticks(note) SELECT %s || g FROM generate_series(1, 30) g", (f"r{i} ",))
        pg.switch_wal()
    target, expected = mark_target(env, pg, "the target")
    target_dir = env.base / "restored"
    result = env.cli_json(
        "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start"
    )
    qdir = target_dir / "pg_wal" / walqueue.PREFETCH_DIR
    try:
        dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname=postgres"
        assert snapshot(None, dsn) == expected
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        served = walqueue.read_served(str(qdir))
        assert len(served) >= 3, served
        # the first segment replay read was already queued (and verified) when it asked
        assert served[0] == (result["first_segment"], "queue"), (result, served)
        assert all(how == "queue" for _, how in served[:3]), served
        # the prefetcher ran as the server's user: the queue is the server's
        uid = pwd.getpwnam(PG_USER).pw_uid
        assert qdir.stat().st_uid == uid
        assert all(p.stat().st_uid == uid for p in qdir.iterdir()), [
            (p.name, p.stat().st_uid) for p in qdir.iterdir()
        ]
        # recovery ended (promoted): the prefetcher left, its lock and queue with it
        assert wait_for(lambda: not prefetchers(qdir)), prefetchers(qdir)
        assert not (qdir / walqueue.LOCK).exists()
        assert not [p.name for p in qdir.iterdir() if len(p.name) == 24]
    finally:
        stop_server(target_dir)
    assert not prefetchers(qdir)
    assert os.path.isdir(qdir)
