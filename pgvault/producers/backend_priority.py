"""The lowest CPU priority for our own server backend, when it provably runs here.

`backup logical` counts the big tables' rows in the dump's snapshot. Counted while
pg_dump runs, their scans took CPU from it on a small host; counted after it, they add to
the backup's time. With the counting backend at nice 19 they run beside pg_dump on the
CPU pg_dump leaves idle (pgvault.producers.snapshot_dump).

A backend is reniced only when it is provably a process of this machine's server: the
process with the backend's pid (`pg_backend_pid()`) has the server's `data_directory` as
its working directory and its command line is PostgreSQL's. A server on another host, in
another pid namespace, a data directory we may not read, a backend we may not see or
renice (another user without CAP_SYS_NICE): no renice, and the caller keeps to counting
after pg_dump.

The former priority is given back after the counts (lowering a nice value needs
CAP_SYS_NICE, so as another user it stays at 19): either way the session ends right
after, when the backup closes its connection, and the backend with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from pgvault import pg

LOWEST = 19  # nice value

log = logging.getLogger(__name__)

# pg_settings hides data_directory from roles without pg_read_all_settings (no error,
# which would abort the transaction): None then
BACKEND_SQL = (
    "SELECT pg_backend_pid() AS pid, "
    "(SELECT setting FROM pg_settings WHERE name = 'data_directory') AS datadir"
)


def local_backend(conn: pg.Connection) -> int | None:
    """The pid of `conn`'s server backend when it is provably a process of this machine
    (is_local_backend); None otherwise."""
    row = pg.fetch_one(conn, BACKEND_SQL)
    if row is None or not row["datadir"]:
        return None
    pid = int(row["pid"])
    return pid if is_local_backend(pid, str(row["datadir"])) else None


def is_local_backend(pid: int, data_directory: str) -> bool:
    """Whether process `pid` here works in `data_directory` and runs PostgreSQL."""
    proc = f"/proc/{pid}"
    try:
        # the same directory (st_dev, st_ino), not just the same name: a server in a
        # container may have a data directory of the same path as one of the host's
        if not os.path.samefile(f"{proc}/cwd", data_directory):
            return False
        with open(f"{proc}/cmdline", "rb") as fh:
            argv0 = fh.read().split(b"\0", 1)[0]
    except (OSError, ValueError):
        return False
    # "postgres: user db host(port) ..." (the process title), or the program itself
    # when the server keeps its titles (update_process_title = off)
    return argv0.startswith(b"postgres") or os.path.basename(argv0) == b"postgres"


class LowPriority:
    """Puts a process at nice LOWEST and gives it its former priority back; thread-safe,
    and once `restore` has run, `lower` does nothing (the caller's race: lowering after
    the work it should make way for has ended)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._lock = threading.Lock()
        self._before: int | None = None
        self._over = False

    def lower(self) -> bool:
        """Renice to LOWEST; False when not permitted (or already over)."""
        with self._lock:
            if self._over:
                return False
            try:
                before = os.getpriority(os.PRIO_PROCESS, self.pid)
                os.setpriority(os.PRIO_PROCESS, self.pid, LOWEST)
            except OSError as exc:
                log.debug("backend %d not reniced: %s", self.pid, exc)
                return False
            self._before = before
            return True

    def restore(self) -> None:
        """The former priority back, when permitted (EPERM as another user: ignored)."""
        with self._lock:
            self._over = True
            before, self._before = self._before, None
            if before is not None:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, self.pid, before)
