"""Start a restore's WAL prefetcher before its server starts (issue 18).

restore_command's fast path (walget) starts the prefetcher on its first call, so without
this the first segments of a replay are served by the slow paths (the spool copy in
walget, or the full `pgvault wal-restore`) while the prefetcher comes up. `restore pitr`
(and the scratch cluster of `restore table|database`, drills) call `start_early` right
before `pg_ctl start`: the queue's `.want` names the segment before the plan's first one,
so the prefetcher's window begins with the first segment replay reads; the start waits
(at most FIRST_WAIT) until that segment is queued.

The prefetcher runs as the data directory's owner (the server's user: a restore running
as root chowned the tree to it), so every file it writes in pg_wal/.pgvault-prefetch is
the server's, exactly as when restore_command starts it. Its environment is the
server's (server.server_environment: no passwords). It leaves when recovery ends
(recovery.signal gone, or postmaster.pid gone once seen), and RestoredServer.stop waits
for it (walqueue.wait_gone).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from pgvault.config import Settings
from pgvault.restore import walqueue
from pgvault.walfile import parse_name, segment_name

log = logging.getLogger(__name__)

FIRST_WAIT = 30.0  # seconds the server's start waits at most for the first segment


def queue_of(datadir: Path) -> Path:
    return datadir / "pg_wal" / walqueue.PREFETCH_DIR


def daemon_argv(settings: Settings, qdir: Path, *, from_store: bool) -> list[str]:
    """The same command restore_command's walget starts (walqueue.ensure_prefetcher)."""
    argv = [sys.executable, "-m", "pgvault"]
    if settings.config_file:
        argv += ["--config", str(settings.config_file.resolve())]
    argv.append("wal-restore")
    if from_store:
        argv.append("--from-store")
    return [*argv, "--prefetch-daemon", str(qdir)]


def start_early(
    datadir: Path, first_segment: str, seg_size: int, settings: Settings, *, from_store: bool
) -> subprocess.Popen[bytes] | None:
    """Start the prefetcher of the restore in `datadir` at `first_segment` (None: not
    started; restore_command starts it on its first call, as before)."""
    from pgvault.restore.server import server_environment

    try:
        wal = parse_name(first_segment)
    except ValueError:
        return None
    segno = wal.segno(seg_size)
    if wal.type != "segment" or segno == 0:
        return None
    qdir = queue_of(datadir)
    st = datadir.stat()
    qdir.mkdir(mode=0o700, exist_ok=True)
    # the window starts after `.want`: the segment before the first one replay needs
    walqueue.set_want(str(qdir), segment_name(wal.timeline, segno - 1, seg_size), seg_size)
    as_owner = os.geteuid() == 0 and st.st_uid != 0
    if as_owner:
        for path in (qdir, qdir / walqueue.WANT):
            os.chown(path, st.st_uid, st.st_gid)
    if walqueue.running(str(qdir)):
        return None
    env = server_environment()
    root = str(Path(__file__).resolve().parents[2])  # pgvault imports from here (as walget)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        daemon_argv(settings, qdir, from_store=from_store),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd=str(datadir),
        env=env,
        user=st.st_uid if as_owner else None,
        group=st.st_gid if as_owner else None,
        extra_groups=[] if as_owner else None,
    )
    ready = _first_ready(str(qdir), first_segment, proc)
    log.debug(
        "WAL prefetcher %d started at %s for %s (%s)",
        proc.pid,
        first_segment,
        datadir,
        "queued" if ready else "not queued yet",
    )
    return proc


def _first_ready(qdir: str, name: str, proc: subprocess.Popen[bytes]) -> bool:
    """Wait (bounded) until the prefetcher has queued NAME (or found it nowhere): the
    server's first restore_command call is then served from the queue. It would wait
    for that segment anyway; a prefetcher that cannot get it does not hold the start up
    longer than FIRST_WAIT (restore_command's own paths serve it then)."""
    deadline = time.monotonic() + FIRST_WAIT
    absent = os.path.join(qdir, name + walqueue.ABSENT)
    while time.monotonic() < deadline and proc.poll() is None:
        if (
            walqueue.valid(qdir, name) is not None
            or os.path.exists(walqueue.ready_path(qdir, name))
            or os.path.exists(absent)
        ):
            return True
        time.sleep(0.02)
    return False
