"""A private scratch cluster restored to time T, for `restore table|database` (issue 20).

The cluster lives in a private temporary directory (mode 0700) and is removed whatever
happens, Ctrl-C included (the context manager stops the server, then removes the
directory). It is restored by `restore pitr`'s own steps (catalog plan, sha256-checked
fetch, safe extraction, tablespace guard, archive_mode = off, restore_command =
pgvault wal-restore) with a partial layout (restore/partial.py), then isolated further:
no TCP listener at all (listen_addresses = ''), its socket in a private directory,
autovacuum off (the zero-filled databases must never be read), and it stops at T
paused in recovery (read-only) or promoted when the restore has to write to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings
from pgvault.log import for_artifact
from pgvault.restore.partial import PartialLayout
from pgvault.restore.pitr import PitrResult, restore_pitr
from pgvault.restore.server import RestoredServer, remove_socket_dir
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "pgvault-scratch-"

ISOLATION = (
    "listen_addresses = ''",  # the private unix socket only
    "autovacuum = off",  # never read the zero-filled databases
    "hot_standby = on",  # pause at the target: read-only, answering pg_dump
    "archive_mode = off",
    "max_parallel_workers_per_gather = 0",
)


@dataclass
class Scratch:
    root: Path
    datadir: Path
    server: RestoredServer
    pitr: PitrResult
    restored_to: str | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def backup_id(self) -> str:
        return self.pitr.backup_id


def _isolate(datadir: Path, action: str) -> None:
    with (datadir / "postgresql.auto.conf").open("a") as fh:
        fh.write(
            f"# --- pgvault restore table|database: private scratch cluster ({action} at T)\n"
            + "\n".join(ISOLATION)
            + "\n"
        )


def _private_root(parent: Path | None, owner: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    if os.geteuid() == 0:  # the cluster's owner must reach its data directory
        pw = pwd.getpwnam(owner)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    return root


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd, timeout) unwinds like Ctrl-C, so the clean-up below runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def scratch_cluster(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    *,
    at: datetime,
    layout: PartialLayout,
    identities: list[Any],
    owner: str = "postgres",
    from_store: bool = False,
    promote: bool = False,
    timeout: float = 3600,
    parent: Path | None = None,
) -> Iterator[Scratch]:
    """Restore the cluster to `at` (partially, per `layout`) in a private directory,
    start it isolated, wait for the target; yield it; stop and remove it afterwards."""
    action = "promote" if promote else "pause"
    stack = contextlib.ExitStack()
    stack.enter_context(_terminate_as_interrupt())
    root = _private_root(parent, owner)
    server: RestoredServer | None = None
    socket_dir: Path | None = None
    try:
        started = time.monotonic()
        result = restore_pitr(
            settings,
            catalog,
            store,
            to=at,
            target_dir=root / "data",
            start=False,
            action=action,
            identities=identities,
            owner=owner,
            timeout=timeout,
            from_store=from_store,
            extractor=layout,
        )
        socket_dir = Path(result.socket_dir)
        laid_out = time.monotonic()
        first = layout.first_started or laid_out
        timings = {
            "fetch_s": round(first - started, 2),
            "extract_s": round(laid_out - first, 2),
        }
        datadir = root / "data"
        _isolate(datadir, action)
        server = RestoredServer(
            datadir, result.port, settings.postgres.bin_dir, settings.postgres.user, socket_dir
        )
        alog = for_artifact(log, f"physical/{result.backup_id}")
        alog.info("replaying WAL to %s in the scratch cluster %s", result.target, datadir)
        server.prefetch_from(result.first_segment, result.seg_size, settings, from_store=from_store)
        server.start(timeout=int(timeout))
        restored_to = server.wait_recovered(action, timeout)
        timings["replay_s"] = round(time.monotonic() - laid_out, 2)
        yield Scratch(root, datadir, server, result, restored_to, timings)
    finally:
        if server is not None:
            server.stop("immediate")
        if socket_dir is not None:
            remove_socket_dir(socket_dir)
        shutil.rmtree(root, ignore_errors=True)
        stack.close()


def major_of(datadir: Path) -> int | None:
    """The scratch cluster's major version: its own pg_dump dumps it."""
    try:
        return int((datadir / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return None
