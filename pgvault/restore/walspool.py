"""A WAL file's verified copy out of the local spool (stdlib only: restore_command's
fast path, walget, uses it while the prefetcher starts)."""

from __future__ import annotations

import os

from pgvault import fsutil
from pgvault.errors import IntegrityError


def spool_sha256(spool_dir: str, name: str) -> str | None:
    """The sha256 the spool recorded for NAME (None: not in the spool)."""
    try:
        with open(os.path.join(spool_dir, "wal", name + ".sha256")) as fh:
            return fh.read().split()[0]
    except (OSError, IndexError):
        return None


def from_spool(spool_dir: str, name: str, dest: str) -> bool | None:
    """True: served from the spool. False: not there. None: there, but its bytes do not
    match its sha256 (the caller must not end recovery if the store has no copy either)."""
    src = os.path.join(spool_dir, "wal", name)
    sha = spool_sha256(spool_dir, name)
    if sha is None:
        return False
    try:
        fsutil.copy_verified(src, dest, sha)
    except (IntegrityError, OSError):
        return None
    return True
