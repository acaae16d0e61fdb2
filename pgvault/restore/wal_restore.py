"""`pgvault wal-restore NAME PATH`: PostgreSQL's restore_command.

    restore_command = 'pgvault wal-restore %f %p'

Looks for NAME, in order: segments prefetched by an earlier call (already verified), the
local spool (checked against its .sha256, fsutil.copy_verified), the store (streamed,
decoded and proven by storage.verified: stored and content sha256 from the catalog row,
or from the object's metadata on a host without catalog). PATH is written atomically.
After serving a segment it starts one background prefetcher that fetches the next
segments into pg_wal/.pgvault-prefetch/, so replay is not bound by one download per
process.

Exit codes, chosen for PostgreSQL's sake:
    0    PATH holds NAME, verified
    1    NAME does not exist anywhere (normal at the end of recovery)
    254  anything else (store unreachable, checksum mismatch, bad config): an exit status
         above 125 makes PostgreSQL abort recovery instead of taking it for the end of
         WAL and promoting at the wrong point.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from typing import Any

from pgvault import fsutil
from pgvault.errors import IntegrityError, PgvaultError
from pgvault.walfile import WalName, parse_name, read_header, segment_name

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ABORT = 254
PREFETCH_DIR = ".pgvault-prefetch"
PREFETCH_AHEAD = 8


def _err(msg: str) -> None:
    print(f"pgvault wal-restore: {msg}", file=sys.stderr)


def from_spool(spool_dir: str, name: str, dest: str) -> bool | None:
    """True: served from the spool. False: not there. None: there, but its bytes do not
    match its sha256 (the caller must not end recovery if the store has no copy either)."""
    src = os.path.join(spool_dir, "wal", name)
    try:
        with open(src + ".sha256") as fh:
            sha = fh.read().split()[0]
    except (OSError, IndexError):
        return False
    try:
        fsutil.copy_verified(src, dest, sha)
    except (IntegrityError, OSError):
        return None
    return True


def catalog_row(catalog_path: str, kind: str, name: str) -> dict[str, str] | None:
    """The artifact's state, sha256 and files JSON; None when unknown or no catalog.

    The one read of the catalog outside pgvault/catalog/, on purpose: restore_command runs
    once per segment and must stay light (stdlib sqlite3, read-only, no pydantic or
    sqlite_utils import), so it cannot go through CatalogDB and the typed rows.
    tests/test_layering.py lists this function as the accepted exception."""
    if not os.path.exists(catalog_path):
        return None
    try:
        conn = sqlite3.connect(f"file:{catalog_path}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute(
                "SELECT state, sha256, files FROM artifacts WHERE kind=? AND name=? "
                "AND deleted_at IS NULL",
                (kind, name),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return {"state": row[0], "sha256": row[1], "files": row[2]} if row else None


def _next_names(wal: WalName, served: str) -> list[str]:
    try:
        with open(served, "rb") as fh:
            seg_size = read_header(fh.read(64)).seg_size
    except (OSError, ValueError):
        return []
    segno = wal.segno(seg_size)
    return [segment_name(wal.timeline, segno + i, seg_size) for i in range(1, PREFETCH_AHEAD + 1)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kick_prefetch(
    config: str | None, wal: WalName, dest: str, *, spool_dir: str, use_spool: bool = True
) -> None:
    """Start one background prefetcher for the segments after `wal` (never blocks)."""
    if wal.type != "segment":
        return
    names = _next_names(wal, dest)
    pdir = os.path.join(os.path.dirname(dest) or ".", PREFETCH_DIR)
    spool_wal = os.path.join(spool_dir, "wal") if use_spool else None

    def at_hand(n: str) -> bool:
        return os.path.exists(os.path.join(pdir, n)) or bool(
            spool_wal and os.path.exists(os.path.join(spool_wal, n))
        )

    if all(at_hand(n) for n in names):
        return  # nothing to fetch: no process to start (it would compete with replay)
    os.makedirs(pdir, exist_ok=True)
    lock = os.path.join(pdir, ".lock")
    try:
        with open(lock) as fh:
            pid = int(fh.read().strip() or 0)
        if pid > 0 and _pid_alive(pid):
            return
        os.unlink(lock)  # a dead prefetcher's (or one killed before it wrote its pid)
    except (OSError, ValueError):
        pass
    argv = [sys.executable, "-m", "pgvault"]
    if config:
        argv += ["--config", config]
    argv += ["wal-restore", "--prefetch", pdir, *names]
    if not use_spool:
        argv.insert(argv.index("--prefetch"), "--from-store")
    subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _place(name: str, dest: str, conf: Any, config: str | None, *, use_spool: bool) -> int:
    """Put NAME at dest, verified: prefetched copy, spool, or store."""
    wal = parse_name(name)
    prefetched = os.path.join(os.path.dirname(dest) or ".", PREFETCH_DIR, name)
    spooled: bool | None = False
    if os.path.isfile(prefetched):
        os.replace(prefetched, dest)  # verified when it was prefetched
    elif not (use_spool and (spooled := from_spool(conf.spool_dir, name, dest))):
        row = catalog_row(conf.catalog_path, wal.kind, name)
        if row is not None and row["state"] in ("corrupt", "missing"):
            _err(f"{name} is catalogued as {row['state']}; refusing to replay it")
            return EXIT_ABORT
        from pgvault.restore.wal_fetch import fetch_wal

        if not fetch_wal(config, name, dest, row):
            if spooled is None:
                _err(f"{name}: the spool copy does not match its sha256 and the store has none")
                return EXIT_ABORT
            return EXIT_NOT_FOUND
    return EXIT_OK


def serve(name: str, dest: str, config: str | None, *, use_spool: bool = True) -> int:
    from pgvault.lightconf import load_light

    wal = parse_name(name)
    conf = load_light(config)
    placed = _place(name, dest, conf, config, use_spool=use_spool)
    if placed != EXIT_OK:
        return placed
    # invariant 11: no replayed CREATE TABLESPACE may point outside the restored cluster
    from pgvault.restore import tblspc_guard

    def fetch_next(nxt: str) -> str | None:
        path = os.path.join(os.path.dirname(dest) or ".", PREFETCH_DIR, nxt)
        if os.path.isfile(path):
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".guard"
        if _place(nxt, tmp, conf, config, use_spool=use_spool) != EXIT_OK:
            return None
        os.replace(tmp, path)
        return path

    datadir = os.path.dirname(os.path.dirname(os.path.abspath(dest)))
    try:
        for line in tblspc_guard.apply(datadir, name, dest, fetch_next):
            _err(f"{name}: {line}")
    except tblspc_guard.GuardError as exc:
        os.unlink(dest)
        _err(f"{name}: cannot map a tablespace into the restored cluster: {exc}")
        return EXIT_ABORT
    kick_prefetch(config, wal, dest, spool_dir=conf.spool_dir, use_spool=use_spool)
    return EXIT_OK


def prefetch_main(argv: list[str], config: str | None, *, use_spool: bool = True) -> int:
    """Background: fetch the given names into the prefetch directory, verified."""
    pdir, names = argv[0], argv[1:]
    lock = os.path.join(pdir, ".lock")
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return EXIT_OK
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        from pgvault.restore.wal_fetch import prefetch

        prefetch(config, pdir, names, use_spool=use_spool)
        cutoff = time.time() - 86400
        for entry in os.scandir(pdir):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
    except Exception:  # noqa: S110 - a failed prefetch only means a slower next call
        pass
    finally:
        import contextlib

        with contextlib.suppress(OSError):
            os.unlink(lock)
    return EXIT_OK


def main(argv: list[str], config: str | None = None) -> int:
    use_spool = True
    if argv[:1] == ["--from-store"]:  # drills: prove the store copy, not the spool
        use_spool, argv = False, argv[1:]
    if argv[:1] == ["--prefetch"]:
        return prefetch_main(argv[1:], config, use_spool=use_spool)
    if len(argv) != 2:
        _err("expected NAME and PATH. usage: pgvault [--config FILE] wal-restore NAME PATH")
        return 2
    try:
        return serve(argv[0], argv[1], config, use_spool=use_spool)
    except (PgvaultError, ValueError, OSError) as exc:
        _err(f"{argv[0]}: {exc}")
        return EXIT_ABORT
