"""Restores run the backup's own PostgreSQL major version.

A physical backup records `pg_version_num` / `pg_major` (manifest.json, catalog meta);
its data directory only starts under that major's `postgres`, and pg_verifybackup,
pg_controldata and pg_waldump must read that major's formats. The restore's settings get
`postgres.bin_dir` pointed at the directory holding that version (configured dir, PATH,
/usr/lib/postgresql/<major>/bin); without one the restore is refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgvault.config import Settings
from pgvault.errors import NotRestorable, PostgresError
from pgvault.pgtools import bin_dir_for, major_of


def backup_major(meta: Mapping[str, Any]) -> int | None:
    """The major version a backup was taken on, None for rows from before it was recorded
    without a version number."""
    major = meta.get("pg_major")
    if isinstance(major, int) and major > 0:
        return major
    return major_of(meta.get("pg_version_num"))


def for_backup(settings: Settings, meta: Mapping[str, Any], what: str) -> Settings:
    """`settings` with postgres.bin_dir at the backup's major version's programs."""
    major = backup_major(meta)
    if major is None:
        return settings
    try:
        bin_dir = bin_dir_for(major, settings.postgres.bin_dir, "postgres")
    except PostgresError as exc:
        raise NotRestorable(
            f"{what} was taken on PostgreSQL {major} and restores only with PostgreSQL "
            f"{major}'s server programs, which were not found ({exc})"
        ) from None
    if bin_dir == settings.postgres.bin_dir:
        return settings
    postgres = settings.postgres.model_copy(update={"bin_dir": bin_dir})
    return settings.model_copy(update={"postgres": postgres})
