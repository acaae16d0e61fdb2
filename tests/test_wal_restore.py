"""`pgvault wal-restore` as PostgreSQL runs it (as the postgres user, cwd = data dir):
spool, store, prefetch, and exit codes that never end recovery early by mistake."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.pgcluster import as_postgres, chown_pg

pytestmark = pytest.mark.slow


def archived_env(
    make_env: EnvFactory, storage: str, n: int = 6, extra: dict[str, Any] | None = None
) -> tuple[PgvaultEnv, list[str], dict[str, bytes]]:
    env = make_env(storage, extra)
    env.cli("init")
    pg = env.make_pg()
    names = []
    for _ in range(n):
        pg.sql("CREATE TABLE IF NOT EXISTS w (x text)")
        pg.sql("INSERT INTO w SELECT md5(g::text) FROM generate_series(1, 2000) g")
        names.append(pg.switch_wal())
    pg.wait_archived(names[-1])
    env.drain()
    originals = {name: (env.spool / "wal" / name).read_bytes() for name in names}
    return env, names, originals


def fake_datadir(env: PgvaultEnv) -> Path:
    datadir = env.base / "restoring"
    (datadir / "pg_wal").mkdir(parents=True)
    chown_pg(datadir)
    return datadir


def damage_in_store(env: PgvaultEnv, name: str) -> None:
    """Overwrite WAL segment `name`'s store object (timeline 1) with bytes that are not zstd."""
    key = f"pg/{env.cluster}/wal/00000001/{name}.zst"
    store = env.store()
    info = store.head(key)
    assert info is not None
    store.put_bytes(key, b"not zstd", dict(info.metadata))


def wal_restore(env: PgvaultEnv, datadir: Path, name: str, *flags: str) -> tuple[int, str]:
    proc = as_postgres(
        [
            "sh",
            "-c",
            f'cd "{datadir}" && exec "$0" "$@"',
            str(env.pgvault_bin),
            "--config",
            str(env.config_path),
            "wal-restore",
            *flags,
            name,
            "pg_wal/RECOVERYXLOG",
        ]
    )
    return proc.returncode, proc.stderr


def test_serves_from_store_when_spool_is_gone_and_prefetches(make_env: EnvFactory) -> None:
    env, names, originals = archived_env(make_env, "s3")
    for name in names:
        (env.spool / "wal" / name).unlink()
    datadir = fake_datadir(env)
    code, err = wal_restore(env, datadir, names[0])
    assert code == 0, err
    assert (datadir / "pg_wal" / "RECOVERYXLOG").read_bytes() == originals[names[0]]
    prefetch = datadir / "pg_wal" / ".pgvault-prefetch"

    def queued(n: str) -> bool:  # as NAME (walget's) or NAME.ready (restore_command's mv)
        return (prefetch / n).exists() or (prefetch / f"{n}.ready").exists()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not queued(names[1]):
        time.sleep(0.2)
    assert queued(names[1]), "the next segment was not prefetched"
    for name in names[1:]:
        code, err = wal_restore(env, datadir, name)
        assert code == 0, err
        assert (datadir / "pg_wal" / "RECOVERYXLOG").read_bytes() == originals[name]

    # segments replay passed leave the queue; the one read last is there again as NAME
    # (PostgreSQL asks for it again at the end of recovery)
    def settled() -> bool:
        return [n for n in names if queued(n)] == names[-1:] and (prefetch / names[-1]).exists()

    while time.monotonic() < deadline + 60 and not settled():
        time.sleep(0.2)
    assert [n for n in names if queued(n)] == names[-1:]
    assert (prefetch / names[-1]).exists()


def test_exit_codes_for_absent_history_and_damage(make_env: EnvFactory) -> None:
    # no prefetch queue here: each call must meet the spool and the store as they are now
    env, names, originals = archived_env(
        make_env, "local", n=3, extra={"restore": {"prefetch_segments": 0}}
    )
    datadir = fake_datadir(env)
    dest = datadir / "pg_wal" / "RECOVERYXLOG"
    # spool copy is served without the store
    code, _ = wal_restore(env, datadir, names[0])
    assert code == 0 and dest.read_bytes() == originals[names[0]]
    dest.unlink()
    # the end of WAL and a history file that never existed: 1, quietly
    code, err = wal_restore(env, datadir, "0000000100000000000000FF")
    assert (code, err) == (1, "")
    code, err = wal_restore(env, datadir, "00000002.history")
    assert (code, err) == (1, "")
    # a damaged store object (spool copy gone): 254 so PostgreSQL aborts recovery
    victim = names[1]
    (env.spool / "wal" / victim).unlink()
    damage_in_store(env, victim)
    code, err = wal_restore(env, datadir, victim)
    assert code == 254 and victim in err
    assert not dest.exists()
    # a spool copy whose bytes changed is not trusted: the store copy is used instead
    spooled = env.spool / "wal" / names[2]
    os.chmod(spooled, 0o644)
    spooled.write_bytes(b"x" * 100)
    code, err = wal_restore(env, datadir, names[2])
    assert code == 0, err
    assert (
        hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(originals[names[2]]).digest()
    )
