"""The restore's WAL prefetch queue, driven through the restore_command `restore pitr`
writes (walget, then `pgvault wal-restore` for what the queue does not hold), as
PostgreSQL runs it: the postgres user, cwd = the data directory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pgvault.restore import walqueue
from pgvault.restore.recovery_conf import restore_command_of
from pgvault.walfile import parse_name, segment_name
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.pgcluster import PG_BIN, PG_USER, chown_pg
from tests.test_wal_restore import archived_env, damage_in_store, fake_datadir

pytestmark = pytest.mark.slow

QUEUE = Path("pg_wal/.pgvault-prefetch")


def command(env: PgvaultEnv, datadir: Path, name: str, dest: str) -> list[str]:
    """restore_command as PostgreSQL runs it: `sh -c` in the data directory, as postgres."""
    line = restore_command_of(env.settings, from_store=False)
    line = line.replace("%%", "\0").replace("%f", name).replace("%p", dest).replace("\0", "%")
    return ["runuser", "-u", PG_USER, "--", "sh", "-c", f'cd "{datadir}" && {line}']


def restore(
    env: PgvaultEnv, datadir: Path, name: str, dest: str = "pg_wal/RECOVERYXLOG"
) -> tuple[int, str]:
    proc = subprocess.run(
        command(env, datadir, name, dest), capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stderr


def queued(datadir: Path) -> list[str]:
    """Segments in the queue, as NAME (walget's, with a marker) or NAME.ready (the mv's)."""
    names = [p.name.removesuffix(".ready") for p in (datadir / QUEUE).iterdir()]
    return sorted(n for n in names if len(n) == 24)


def write_guard(datadir: Path, *, ranges: list[list[int]]) -> None:
    """A tablespace guard file as restore pitr writes it; segments outside `ranges` are
    scanned by walget's guard (pg_waldump) when served, so never published as .ready."""
    guard = {
        "version": 1,
        "ranges": ranges,
        "segments": {},
        "straddles": [],
        "unscanned": [],
        "map": {},
        "by_location": {},
        "default_dir": str(datadir / "pgvault_tablespaces"),
        "pg_waldump": str(PG_BIN / "pg_waldump"),
    }
    (datadir / "pgvault_tablespaces.json").write_text(json.dumps(guard))


def wait_for(what: Callable[[], bool], timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.1)
    return what()


def next_segment(name: str) -> str:
    wal = parse_name(name)
    return segment_name(wal.timeline, wal.segno() + 1, 16 * 1024 * 1024)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_queue_is_bounded_served_in_order_and_gone_when_recovery_ends(
    make_env: EnvFactory,
) -> None:
    env, names, originals = archived_env(
        make_env, "local", n=8, extra={"restore": {"prefetch_segments": 3}}
    )
    assert names == [names[0], *(next_segment(n) for n in names[:-1])], "not consecutive"
    datadir = fake_datadir(env)
    (datadir / "recovery.signal").write_text("")
    chown_pg(datadir)
    dest = datadir / "pg_wal" / "RECOVERYXLOG"
    code, err = restore(env, datadir, names[0])  # not queued yet: the full path serves it
    assert code == 0, err
    assert digest(dest.read_bytes()) == digest(originals[names[0]])
    assert wait_for(lambda: queued(datadir) == names[1:4]), queued(datadir)
    # bounded: the queue never goes past prefetch_segments while replay stands still
    seen = set()
    for _ in range(20):
        seen.add(tuple(queued(datadir)))
        time.sleep(0.1)
    assert seen == {tuple(names[1:4])}
    for i, name in enumerate(names[1:], start=1):
        assert wait_for(lambda name=name: name in queued(datadir))
        code, err = restore(env, datadir, name)
        assert code == 0, err
        assert digest(dest.read_bytes()) == digest(originals[name])
        # the bound, plus the segment replay read last (asked for again at the end)
        assert len(queued(datadir)) <= 3 + 1
        # segments replay passed leave the queue (once the prefetcher has seen the call)
        assert wait_for(lambda i=i: set(queued(datadir)) <= set(names[i : i + 4]))
    # each of those was a NAME.ready moved by restore_command's `mv`: walget never ran
    # (it writes `.want`), the prefetcher followed replay by the files taken
    assert (datadir / QUEUE / ".want").read_text().split()[0] == names[0]
    assert [n for n, _ in walqueue.read_served(str(datadir / QUEUE))][1:] == names[1:]
    # the end of WAL: 1, quietly (PostgreSQL ends recovery there), from the prefetcher's
    # fresh "found nowhere" or from the full path
    code, err = restore(env, datadir, next_segment(names[-1]))
    assert (code, err) == (1, "")
    # the segment read last, asked for again: still served, verified
    code, err = restore(env, datadir, names[-1])
    assert code == 0, err
    assert digest(dest.read_bytes()) == digest(originals[names[-1]])
    code, err = restore(env, datadir, "00000002.history")
    assert (code, err) == (1, "")
    # recovery over (PostgreSQL removes recovery.signal): the prefetcher exits, cleans up
    (datadir / "recovery.signal").unlink()
    assert wait_for(lambda: not (datadir / QUEUE / ".lock").exists())
    assert queued(datadir) == []
    assert not [
        p for p in (datadir / QUEUE).iterdir() if p.name.endswith((".ok", ".part", ".absent"))
    ]


def test_changed_queued_segments_are_never_served_and_races_are_safe(
    make_env: EnvFactory,
) -> None:
    env, names, originals = archived_env(
        make_env, "local", n=6, extra={"restore": {"prefetch_segments": 5}}
    )
    datadir = fake_datadir(env)
    write_guard(datadir, ranges=[])  # every segment through walget: NAME with its marker
    queue = datadir / QUEUE
    dest = datadir / "pg_wal" / "RECOVERYXLOG"
    code, err = restore(env, datadir, names[0])
    assert code == 0, err
    assert wait_for(lambda: set(names[1:6]) <= set(queued(datadir))), queued(datadir)

    # a queued file changed after the prefetcher verified it: fetched again, verified
    data = bytearray((queue / names[1]).read_bytes())
    data[4096] ^= 0xFF
    (queue / names[1]).write_bytes(bytes(data))
    code, err = restore(env, datadir, names[1])
    assert code == 0, err
    assert digest(dest.read_bytes()) == digest(originals[names[1]])

    # a file without its marker (dropped there by anyone): not served either
    (queue / f"{names[2]}.ok").unlink()
    (queue / names[2]).write_bytes(b"\0" * len(originals[names[2]]))
    code, err = restore(env, datadir, names[2])
    assert code == 0, err
    assert digest(dest.read_bytes()) == digest(originals[names[2]])

    # changed in the queue, gone from the spool, damaged in the store: 254, nothing served
    victim = names[3]
    (queue / victim).write_bytes(b"x" * len(originals[victim]))
    (env.spool / "wal" / victim).unlink()
    damage_in_store(env, victim)
    dest.unlink()
    code, err = restore(env, datadir, victim)
    assert code == 254 and victim in err, err
    assert not dest.exists()

    # two calls racing for the same segment: each gets the verified bytes
    racer = names[4]
    assert racer in queued(datadir)
    procs = [
        subprocess.Popen(
            command(env, datadir, racer, f"pg_wal/RACE{i}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, errors = proc.communicate(timeout=300)
        assert proc.returncode == 0, errors
    for i in range(2):
        assert digest((datadir / "pg_wal" / f"RACE{i}").read_bytes()) == digest(originals[racer])
    assert not [p for p in (datadir / "pg_wal").iterdir() if "pgvault-take" in p.name]


def test_replay_going_back_still_finds_its_segments_queued(make_env: EnvFactory) -> None:
    """PostgreSQL may read a later segment first (a checkpoint record past its redo
    point) and then go back: the segments the mv path left behind the position stay
    queued and are still served by the rename, verified bytes, walget never involved."""
    env, names, originals = archived_env(
        make_env, "local", n=5, extra={"restore": {"prefetch_segments": 4}}
    )
    datadir = fake_datadir(env)
    (datadir / "recovery.signal").write_text("")
    chown_pg(datadir)
    dest = datadir / "pg_wal" / "RECOVERYXLOG"
    code, err = restore(env, datadir, names[0])  # the full path; starts the prefetcher
    assert code == 0, err
    assert wait_for(lambda: queued(datadir) == names[1:5]), queued(datadir)
    for name in (names[3], names[1], names[2], names[4]):
        code, err = restore(env, datadir, name)
        assert code == 0, err
        assert digest(dest.read_bytes()) == digest(originals[name])
        time.sleep(0.3)  # the prefetcher sees each take (it polls every 50 ms)
    assert (datadir / QUEUE / ".want").read_text().split()[0] == names[0]  # all by `mv`
    (datadir / "recovery.signal").unlink()
    assert wait_for(lambda: not (datadir / QUEUE / ".lock").exists())
    assert queued(datadir) == []
