"""`pgvault wal-restore NAME PATH`: PostgreSQL's restore_command.

    restore_command = 'pgvault wal-restore %f %p'

Looks for NAME, in order: the prefetch queue (walqueue.take: verified by the prefetcher,
its marker still matching), the local spool (checked against its .sha256,
fsutil.copy_verified), the store (streamed, decoded and proven by storage.verified: stored
and content sha256 from the catalog row, or from the object's metadata on a host without
catalog). PATH is written atomically. After serving a segment it makes sure the restore's
one long-lived prefetcher (pgvault.restore.prefetcher) runs and knows where replay is.
`pgvault restore pitr` calls the faster pgvault.restore.walget first, which serves queued
segments without importing the application and comes here for everything else.

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
import sys
from typing import Any

from pgvault.errors import PgvaultError
from pgvault.restore import walqueue
from pgvault.restore.walspool import from_spool
from pgvault.walfile import parse_name

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ABORT = 254


def _err(msg: str) -> None:
    print(f"pgvault wal-restore: {msg}", file=sys.stderr)


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


def _place(name: str, dest: str, conf: Any, config: str | None, *, use_spool: bool) -> int:
    """Put NAME at dest, verified: prefetched copy, spool, or store."""
    wal = parse_name(name)
    spooled: bool | None = False
    qdir = walqueue.queue_dir(dest)
    if wal.type == "segment" and (
        walqueue.take_ready(qdir, name, dest) or walqueue.take(qdir, name, dest)
    ):
        pass  # verified by the prefetcher (NAME: unchanged since, its marker)
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
    qdir = walqueue.queue_dir(dest)
    if wal.type == "segment":
        os.makedirs(qdir, exist_ok=True)
        walqueue.set_want(qdir, name, os.stat(dest).st_size)
        walqueue.ensure_prefetcher(qdir, config, use_spool=use_spool)
    # invariant 11: no replayed CREATE TABLESPACE may point outside the restored cluster
    from pgvault.restore import tblspc_guard

    def fetch_next(nxt: str) -> str | None:
        path = walqueue.valid(qdir, nxt)
        if path is not None:
            return path
        os.makedirs(qdir, exist_ok=True)
        tmp = walqueue.part_path(qdir, nxt) + ".guard"
        if _place(nxt, tmp, conf, config, use_spool=use_spool) != EXIT_OK:
            return None
        walqueue.publish(qdir, nxt, tmp, "placed-by-wal-restore")
        return os.path.join(qdir, nxt)

    datadir = os.path.dirname(os.path.dirname(os.path.abspath(dest)))
    try:
        for line in tblspc_guard.apply(datadir, name, dest, fetch_next):
            _err(f"{name}: {line}")
    except tblspc_guard.GuardError as exc:
        os.unlink(dest)
        _err(f"{name}: cannot map a tablespace into the restored cluster: {exc}")
        return EXIT_ABORT
    return EXIT_OK


def main(argv: list[str], config: str | None = None) -> int:
    use_spool = True
    if argv[:1] == ["--from-store"]:  # drills: prove the store copy, not the spool
        use_spool, argv = False, argv[1:]
    if argv[:1] == ["--prefetch-daemon"] and len(argv) == 2:
        from pgvault.restore import prefetcher

        return prefetcher.main(argv[1], config, use_spool=use_spool)
    if len(argv) != 2:
        _err("expected NAME and PATH. usage: pgvault [--config FILE] wal-restore NAME PATH")
        return 2
    try:
        return serve(argv[0], argv[1], config, use_spool=use_spool)
    except (PgvaultError, ValueError, OSError) as exc:
        _err(f"{argv[0]}: {exc}")
        return EXIT_ABORT
