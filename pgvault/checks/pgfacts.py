"""What PostgreSQL says about its WAL archiving (pg_stat_archiver and a few settings).

Read through pgvault.pg (the psycopg adapter) with the configured [postgres] connection;
any failure is a PostgresError the checks turn into UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgvault.config import PostgresSettings
from pgvault.walfile import DEFAULT_SEG_SIZE, parse_name

_ARCHIVER_SQL = (
    "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
    "last_failed_wal, last_failed_time, stats_reset, pg_is_in_recovery() AS in_recovery, "
    "CASE WHEN pg_is_in_recovery() THEN NULL "
    "ELSE pg_walfile_name(pg_current_wal_insert_lsn()) END AS current_wal "
    "FROM pg_stat_archiver"
)
_SETTINGS_SQL = (
    "SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode', 'wal_level', "
    "'archive_command', 'archive_library', 'archive_timeout', 'wal_segment_size')"
)


@dataclass(frozen=True)
class PgFacts:
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    stats_reset: datetime | None
    in_recovery: bool
    current_wal: str | None  # the segment being written (None on a standby)
    archive_mode: str
    wal_level: str
    archive_command_set: bool | None  # None: not visible to this role
    archive_timeout: int
    seg_size: int

    @property
    def failing(self) -> bool:
        """The latest archive attempt failed (no success since the last failure)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time

    @property
    def pending_segments(self) -> int | None:
        """Completed segments the archiver has not archived yet (same timeline only)."""
        if self.current_wal is None or self.last_archived_wal is None:
            return None
        try:
            current = parse_name(self.current_wal)
            last = parse_name(self.last_archived_wal)
        except ValueError:
            return None
        if not last.is_segment or last.timeline != current.timeline:
            return None
        return max(0, current.segno(self.seg_size) - last.segno(self.seg_size) - 1)


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_pg_facts(settings: PostgresSettings) -> PgFacts:
    from pgvault import pg

    with pg.connect(settings) as conn:
        row = pg.fetch_one(conn, _ARCHIVER_SQL) or {}
        conf = {r["name"]: r["setting"] for r in pg.fetch_all(conn, _SETTINGS_SQL)}
    command = conf.get("archive_command")
    library = conf.get("archive_library") or ""
    command_set = None if command is None else bool(command.strip() or library.strip())
    return PgFacts(
        archived_count=int(row.get("archived_count") or 0),
        last_archived_wal=row.get("last_archived_wal"),
        last_archived_time=_aware(row.get("last_archived_time")),
        failed_count=int(row.get("failed_count") or 0),
        last_failed_wal=row.get("last_failed_wal"),
        last_failed_time=_aware(row.get("last_failed_time")),
        stats_reset=_aware(row.get("stats_reset")),
        in_recovery=bool(row.get("in_recovery")),
        current_wal=row.get("current_wal"),
        archive_mode=str(conf.get("archive_mode", "")),
        wal_level=str(conf.get("wal_level", "")),
        archive_command_set=command_set,
        archive_timeout=int(conf.get("archive_timeout") or 0),
        seg_size=int(conf.get("wal_segment_size") or DEFAULT_SEG_SIZE),
    )
