"""The prefetch queue between the WAL prefetcher and restore_command (stdlib only).

Layout, inside the restored cluster's pg_wal (so serving a segment is a rename on the
same filesystem):

    pg_wal/.pgvault-prefetch/
        .lock                      pid of the one prefetcher of this restore
        .want                      "NAME SEG_SIZE": the last segment restore_command served
        .NAME.part                 being written (never served)
        NAME.ok                    "ino size mtime_ns sha256", written after verification
        NAME                       the verified segment (or history file)
        NAME.ready                 a verified file restore_command's shell takes by rename
        NAME.absent                found nowhere, by the prefetcher, at the file's mtime
        NAME.tblspc-patch          the tablespace guard's pending patch (tblspc_guard)
        .served                    "NAME queue|spool" per segment walget served (a record)

The prefetcher (pgvault.restore.prefetcher) writes NAME only after the bytes were proven
(sha256 of the spool copy, or of the store object and its decoded content), writes the
marker from the file's own stat, then renames `.NAME.part` to NAME. `take()` links NAME
next to restore_command's %p and compares the link's stat with the marker before
renaming it to %p: a file changed after verification (different inode, size or mtime)
or a file without marker is never served; the caller falls back to the verified fetch.
Racing calls for the same NAME each get their own link of the same verified file.

`NAME.ready` is the fast path (issue 18): a file the prefetcher proved and for which the
tablespace guard has nothing to do whenever it is served (tblspc_guard.served_as_is),
published by rename instead of NAME. restore_command's first word moves it to %p
(`mv -f pg_wal/.pgvault-prefetch/%f.ready %p || exec <walget>`): no interpreter starts.
It has one name only, so no link ever shares its inode with a file PostgreSQL writes
(the reason NAME needs its marker); it is not re-checked when served, as nothing but the
server's own user, who can write pg_wal itself, can reach it. Its disappearance tells the
prefetcher that replay took it (`.want` is written by walget's calls only).
"""

from __future__ import annotations

import os
import signal
import sys
import time

PREFETCH_DIR = ".pgvault-prefetch"
LOCK = ".lock"
WANT = ".want"
MARKER = ".ok"
PART = ".part"
READY = ".ready"
ABSENT = ".absent"
SERVED = ".served"
# how long the prefetcher's "found nowhere" answers restore_command (it re-checks every
# second while replay waits at the end of WAL)
ABSENT_FRESH = 2.0


def queue_dir(dest: str) -> str:
    """The queue of the cluster whose pg_wal holds restore_command's %p."""
    return os.path.join(os.path.dirname(dest) or ".", PREFETCH_DIR)


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns}"


def part_path(qdir: str, name: str) -> str:
    return os.path.join(qdir, f".{name}{PART}")


def ready_path(qdir: str, name: str) -> str:
    return os.path.join(qdir, name + READY)


def publish(qdir: str, name: str, verified: str, sha256: str, *, ready: bool = False) -> None:
    """Make the verified file at `verified` (in qdir) available as NAME, marker first;
    with `ready`, as NAME.ready instead (served by rename, see the module docstring)."""
    if ready:
        os.replace(verified, ready_path(qdir, name))
        return
    st = os.stat(verified)
    marker = os.path.join(qdir, name + MARKER)
    tmp = marker + PART
    with open(tmp, "w") as fh:
        fh.write(f"{_stamp(st)} {sha256}\n")
    os.replace(tmp, marker)
    os.replace(verified, os.path.join(qdir, name))


def _marker_of(qdir: str, name: str) -> str | None:
    try:
        with open(os.path.join(qdir, name + MARKER)) as fh:
            parts = fh.read().split()
    except OSError:
        return None
    return " ".join(parts[:3]) if len(parts) == 4 else None


def valid(qdir: str, name: str) -> str | None:
    """The path of NAME in the queue when its stat still matches its marker."""
    path = os.path.join(qdir, name)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path if _marker_of(qdir, name) == _stamp(st) else None


def take(qdir: str, name: str, dest: str) -> bool:
    """Put NAME from the queue at dest; True only when it is the verified file.

    A hard link, not a move: the queue keeps the segment replay read last, which
    PostgreSQL asks for again at the end of recovery (the prefetcher drops it once replay
    has moved on). The link is checked against the marker before it is renamed to dest;
    a file that changed after verification is removed from the queue and never served."""
    src = os.path.join(qdir, name)
    tmp = f"{dest}.pgvault-take.{os.getpid()}"
    try:
        os.link(src, tmp)
    except FileExistsError:
        _unlink(tmp)
        return False
    except OSError:
        return False  # not prefetched (or already dropped)
    try:
        ok = _marker_of(qdir, name) == _stamp(os.stat(tmp))
        if ok:
            os.replace(tmp, dest)
    finally:
        _unlink(tmp)
    if not ok:
        drop(qdir, name)  # the prefetcher fetches it again
    return ok


def take_ready(qdir: str, name: str, dest: str) -> bool:
    """NAME.ready renamed to dest (what restore_command's `mv` does); False when absent."""
    try:
        os.rename(ready_path(qdir, name), dest)
    except OSError:
        return False
    return True


def note_served(qdir: str, name: str, how: str) -> None:
    """Record where restore_command's fast path took NAME from (one appended line)."""
    try:
        fd = os.open(os.path.join(qdir, SERVED), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return  # a record only: never fails a served segment
    try:
        os.write(fd, f"{name} {how}\n".encode())
    finally:
        os.close(fd)


def read_served(qdir: str) -> list[tuple[str, str]]:
    """The record, in serving order: (NAME, "queue" | "spool")."""
    try:
        with open(os.path.join(qdir, SERVED)) as fh:
            return [(p[0], p[1]) for p in (ln.split() for ln in fh) if len(p) == 2]
    except OSError:
        return []


def mark_absent(qdir: str, name: str) -> None:
    """The prefetcher found NAME nowhere (spool, catalog, store) just now."""
    path = os.path.join(qdir, name + ABSENT)
    tmp = path + PART
    with open(tmp, "w"):
        pass
    os.replace(tmp, path)


def absent(qdir: str, name: str) -> bool:
    """NAME was found nowhere by the running prefetcher less than ABSENT_FRESH s ago."""
    try:
        age = time.time() - os.stat(os.path.join(qdir, name + ABSENT)).st_mtime
    except OSError:
        return False
    return -1.0 < age < ABSENT_FRESH and running(qdir)


def clear_absent(qdir: str, name: str) -> None:
    _unlink(os.path.join(qdir, name + ABSENT))


def _unlink(path: str) -> None:
    try:  # noqa: SIM105 - contextlib.suppress would cost this path an import of ~2 ms
        os.unlink(path)
    except OSError:
        pass


def drop(qdir: str, name: str) -> None:
    _unlink(os.path.join(qdir, name))
    _unlink(os.path.join(qdir, name + MARKER))
    _unlink(ready_path(qdir, name))


def set_want(qdir: str, name: str, seg_size: int) -> None:
    """Tell the prefetcher where replay is (atomic: a temp file per writer, renamed)."""
    tmp = os.path.join(qdir, f"{WANT}.{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(f"{name} {seg_size}\n")
    os.replace(tmp, os.path.join(qdir, WANT))


def read_want(qdir: str) -> tuple[str, int] | None:
    try:
        with open(os.path.join(qdir, WANT)) as fh:
            name, size = fh.read().split()
        return name, int(size)
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(qdir: str) -> bool:
    try:
        with open(os.path.join(qdir, LOCK)) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return False
    return pid > 0 and pid_alive(pid)


def wait_gone(qdir: str, timeout: float = 15.0) -> None:
    """After the server stopped: let the queue's prefetcher notice and exit (it polls
    every 50 ms), so removing the data directory never races its last writes; one that
    outlives `timeout` is terminated."""
    deadline = time.monotonic() + timeout
    while running(qdir):
        if time.monotonic() > deadline:
            try:
                with open(os.path.join(qdir, LOCK)) as fh:
                    os.kill(int(fh.read().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
            return
        time.sleep(0.05)


def ensure_prefetcher(qdir: str, config: str | None, *, use_spool: bool) -> None:
    """Start the restore's one long-lived prefetcher unless it runs (never blocks)."""
    if running(qdir):
        return
    import subprocess  # only here: ~5 ms of imports the served-from-queue call never pays

    argv = [sys.executable, "-m", "pgvault"]
    if config:
        argv += ["--config", config]
    argv += ["wal-restore"]
    if not use_spool:
        argv.append("--from-store")
    argv += ["--prefetch-daemon", qdir]
    subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
