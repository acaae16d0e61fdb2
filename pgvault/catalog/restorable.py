""" "What can I restore to at time T, and how?" answered from the catalog alone.

A point in time T is restorable by PITR when a verified base backup B finished at or
before T and the verified WAL chain continues, without a hole, from B's start segment to
a segment holding a transaction end at or after T (recovery stops at the first commit
after T; with no such commit PostgreSQL 13+ refuses to finish recovery). The chain
follows timeline switches as PostgreSQL does: from B's timeline into the child timeline
at its switch point (the child marked current, else the highest-numbered, as
`recovery_target_timeline = latest` would).

An incremental base backup (PostgreSQL 17+) counts only with its whole chain (full
first) verified and live (catalog.chains); its plan carries the chain, which a restore
combines with pg_combinebackup before replaying WAL from the incremental's start.

Everything here is index lookups on `wal_runs`, `timelines` and `artifacts(timeline,
segno)`: no scan of the WAL rows, so it answers in milliseconds at millions of segments.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgvault.catalog.chains import by_id, chain_rows
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.queries import SELECT_ALL
from pgvault.catalog.rows import BackupRow, backup_row
from pgvault.catalog.wal import run_containing
from pgvault.timeutil import iso, parse_iso
from pgvault.walfile import segment_name


@dataclass
class Portion:
    """A stretch of one timeline's chain: segments first..last (inclusive)."""

    timeline: int
    first: int
    last: int

    def count(self) -> int:
        return self.last - self.first + 1


@dataclass
class Window:
    backup_id: str
    backup_timeline: int
    start: str  # the base backup's stop time: the earliest restorable point
    end: str | None  # the last transaction end the chain covers (None: no commit yet)
    portions: list[Portion]
    seg_size: int
    target_timeline: int
    broken_at: str | None = None  # first segment the chain is missing, if it stops early
    needs: str | None = None  # when the backup itself is unusable: the missing segment
    chain: list[BackupRow] = field(default_factory=list)  # backups combined, full first

    @property
    def usable(self) -> bool:
        return self.needs is None and self.end is not None and self.end >= self.start


@dataclass
class Plan:
    target: str
    backup: BackupRow
    window: Window
    segments: int
    wal_bytes: int
    first_segment: str
    last_segment: str
    target_timeline: int

    @property
    def chain(self) -> list[BackupRow]:
        """The base backups this restore combines, full first (the backup alone when full)."""
        return self.window.chain or [self.backup]


@dataclass(frozen=True, slots=True)
class LogicalOption:
    """The dump of one database to restore for a target (newest verified before it)."""

    db: str
    backup_id: str
    finished_at: str
    size: int | None
    name: str
    data_loss_s: float | None = None  # target - finished_at, when a target was given


@dataclass
class Answer:
    target: str
    plan: Plan | None
    windows: list[Window]
    logical: list[LogicalOption] = field(default_factory=list)
    before: str | None = None  # nearest restorable point before T
    after: str | None = None  # nearest restorable point after T


def physical_backups(catalog: CatalogDB) -> list[BackupRow]:
    """Verified, not expiring base backups, newest first."""
    rows = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts WHERE kind = 'physical' AND state = 'verified' "  # noqa: S608
        "AND expiring_at IS NULL AND deleted_at IS NULL ORDER BY finished_at DESC"
    )
    return [backup_row(r) for r in rows]


def _children(conn: sqlite3.Connection, timeline: int) -> list[tuple[int, int, int]]:
    """(child timeline, switchpoint LSN, is_current) of timelines branching off `timeline`."""
    return [
        (int(t), int(sp), int(cur or 0))
        for t, sp, cur in conn.execute(
            "SELECT timeline, switchpoint, is_current FROM timelines WHERE parent=? "
            "AND switchpoint IS NOT NULL ORDER BY timeline",
            (timeline,),
        )
    ]


def _pick_child(conn: sqlite3.Connection, timeline: int, from_lsn: int) -> tuple[int, int] | None:
    kids = [k for k in _children(conn, timeline) if k[1] >= from_lsn]
    if not kids:
        return None
    current = [k for k in kids if k[2]]
    child = current[0] if current else kids[-1]  # "latest": the highest-numbered
    return child[0], child[1]


def chain_from(
    conn: sqlite3.Connection,
    timeline: int,
    segno: int,
    seg_size: int,
    from_lsn: int | None = None,
) -> tuple[list[Portion], int, str | None]:
    """Follow verified WAL from (timeline, segno) across switches. Returns the portions,
    the final timeline, and the name of the first missing segment (None if the chain
    reaches the newest catalogued segment of its last timeline). `from_lsn` is where
    replay starts (a backup's start LSN): only timelines branching at or after it count."""
    portions: list[Portion] = []
    position = segno * seg_size if from_lsn is None else from_lsn
    while True:
        child = _pick_child(conn, timeline, position)
        switch_seg = child[1] // seg_size if child else None
        if child is not None and switch_seg is not None and switch_seg <= segno:
            timeline, segno, position = child[0], switch_seg, child[1]
            continue
        run = run_containing(conn, timeline, segno)
        if run is None:
            return portions, timeline, segment_name(timeline, segno, seg_size)
        if child is not None and switch_seg is not None and run[1] >= switch_seg - 1:
            # the child's copy of the switch segment continues the chain
            portions.append(Portion(timeline, segno, switch_seg - 1))
            timeline, segno, position = child[0], switch_seg, child[1]
            continue
        portions.append(Portion(timeline, segno, run[1]))
        newest = conn.execute(
            "SELECT MAX(segno) FROM artifacts WHERE timeline=? AND segno IS NOT NULL", (timeline,)
        ).fetchone()[0]
        # the chain stops short when newer segments exist, or a child timeline it never reaches
        short = (newest is not None and int(newest) > run[1]) or child is not None
        return portions, timeline, segment_name(timeline, run[1] + 1, seg_size) if short else None


def _last_commit(conn: sqlite3.Connection, portions: list[Portion]) -> str | None:
    for p in reversed(portions):
        row = conn.execute(
            "SELECT MAX(last_commit) FROM (SELECT last_commit FROM artifacts WHERE timeline=? "
            "AND segno BETWEEN ? AND ? AND segno IS NOT NULL AND last_commit IS NOT NULL "
            "ORDER BY segno DESC LIMIT 1)",
            (p.timeline, p.first, p.last),
        ).fetchone()
        if row and row[0]:
            return str(row[0])
    return None


def latest_target(last_commit: str | None) -> str | None:
    """The latest restorable target given the chain's last commit E: recovery stops before
    the first commit later than the target, so it must see one: T < E (one microsecond)."""
    if last_commit is None:
        return None
    return iso(parse_iso(last_commit) - timedelta(microseconds=1))


def window_for(
    conn: sqlite3.Connection, backup: BackupRow, usable: dict[str, BackupRow] | None = None
) -> Window:
    """The restorable window of one base backup; `usable` (the verified live backups by
    id) resolves an incremental's chain (without it an incremental is not usable)."""
    window = _wal_window(conn, backup)
    chain = chain_rows(backup, usable or {})
    window.chain = chain.rows
    if chain.missing and window.needs is None:
        window.needs = chain.missing
    return window


def _wal_window(conn: sqlite3.Connection, backup: BackupRow) -> Window:
    seg_size = backup.wal_seg_size
    timeline = int(backup.timeline or backup.meta.get("timeline") or 1)
    name = backup.label
    if backup.start_lsn is None or backup.end_lsn is None:
        return Window(
            name,
            timeline,
            str(backup.finished_at),
            None,
            [],
            seg_size,
            timeline,
            needs="its WAL range (manifest without LSNs)",
        )
    start_lsn, end_lsn = int(backup.start_lsn), int(backup.end_lsn)
    start_seg = start_lsn // seg_size
    stop_seg = max(start_seg, (end_lsn - 1) // seg_size)  # the segment holding the last byte
    portions, last_tli, broken = chain_from(conn, timeline, start_seg, seg_size, start_lsn)
    window = Window(
        backup_id=name,
        backup_timeline=timeline,
        start=str(backup.finished_at),
        end=latest_target(_last_commit(conn, portions)),
        portions=portions,
        seg_size=seg_size,
        target_timeline=last_tli,
        broken_at=broken,
    )
    # segment numbers run on across timelines: the chain must reach the stop segment
    if not portions or portions[-1].last < stop_seg:
        window.needs = broken or segment_name(timeline, start_seg, seg_size)
    return window


def windows(catalog: CatalogDB) -> list[Window]:
    backups = physical_backups(catalog)
    usable = by_id(backups)
    return [window_for(catalog.conn, b, usable) for b in backups]


def merged(ws: list[Window]) -> list[tuple[str, str]]:
    """Union of the usable windows as (start, end) intervals, oldest first."""
    spans = sorted((w.start, w.end) for w in ws if w.usable and w.end)
    out: list[tuple[str, str]] = []
    for start, end in spans:
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _plan(conn: sqlite3.Connection, backup: BackupRow, window: Window, target: str) -> Plan:
    """WAL needed: from the backup's start segment to the segment where T is reached."""
    segments = 0
    wal_bytes = 0
    first = window.portions[0]
    p = first
    stop = first.first
    for p in window.portions:
        hit = conn.execute(
            "SELECT MIN(segno) FROM artifacts WHERE timeline=? AND segno BETWEEN ? AND ? "
            "AND segno IS NOT NULL AND last_commit > ?",
            (p.timeline, p.first, p.last, target),
        ).fetchone()[0]
        stop = int(hit) if hit is not None else p.last
        segments += stop - p.first + 1
        wal_bytes += int(
            conn.execute(
                "SELECT COALESCE(SUM(stored_size), 0) FROM artifacts WHERE timeline=? "
                "AND segno BETWEEN ? AND ? AND segno IS NOT NULL",
                (p.timeline, p.first, stop),
            ).fetchone()[0]
        )
        if hit is not None:
            break
    return Plan(
        target=target,
        backup=backup,
        window=window,
        segments=segments,
        wal_bytes=wal_bytes,
        first_segment=segment_name(first.timeline, first.first, window.seg_size),
        last_segment=segment_name(p.timeline, stop, window.seg_size),
        target_timeline=window.target_timeline,
    )


def logical_options(catalog: CatalogDB, target: str | None = None) -> list[LogicalOption]:
    """Per database, the newest verified dump taken at or before T (or the newest)."""
    rows = catalog.query(
        "SELECT a.db, a.backup_id, a.finished_at, a.size, a.name FROM artifacts a "
        "WHERE a.kind = 'logical' AND a.state = 'verified' AND a.expiring_at IS NULL "
        "AND a.deleted_at IS NULL AND a.finished_at = (SELECT MAX(b.finished_at) "
        "FROM artifacts b WHERE b.kind = 'logical' AND b.db = a.db AND b.state = 'verified' "
        "AND b.expiring_at IS NULL AND b.deleted_at IS NULL "
        "AND (? IS NULL OR b.finished_at <= ?)) ORDER BY a.db",
        (target, target),
    )
    t = parse_iso(target) if target else None
    return [
        LogicalOption(
            **row,
            data_loss_s=(t - parse_iso(row["finished_at"])).total_seconds() if t else None,
        )
        for row in rows
    ]


IMMEDIATE = "immediate"  # target: the base backup's consistent point (recovery_target)


def consistent_point(catalog: CatalogDB, backup_id: str) -> Plan | None:
    """Restoring a verified base backup to its consistent point needs only the backup:
    pg_wal.tar.zst holds the WAL from its start to its stop."""
    backups = physical_backups(catalog)
    for backup in backups:
        if backup_id in (backup.backup_id, backup.name):
            window = window_for(catalog.conn, backup, by_id(backups))
            if window.needs and window.chain == [backup] and backup.backup_type != "full":
                return None  # an incremental without its chain restores nothing
            return Plan(
                target=IMMEDIATE,
                backup=backup,
                window=window,
                segments=0,
                wal_bytes=0,
                first_segment="",
                last_segment="",
                target_timeline=window.backup_timeline,
            )
    return None


def restorable_at(catalog: CatalogDB, when: datetime, backup_id: str | None = None) -> Answer:
    """T restorable, and how; `backup_id` restricts the plan to that base backup."""
    target = iso(when)
    conn = catalog.conn
    ws: list[Window] = []
    plan = None
    backups = physical_backups(catalog)
    usable = by_id(backups)
    for backup in backups:
        if backup_id is not None and backup_id not in (backup.backup_id, backup.name):
            continue
        window = window_for(conn, backup, usable)
        ws.append(window)
        if plan is None and window.usable and window.start <= target <= (window.end or ""):
            # window.end is already the latest target (just before the last commit)
            plan = _plan(conn, backup, window, target)
    answer = Answer(target, plan, ws, logical_options(catalog, target))
    if plan is None:
        spans = merged(ws)
        ends = [e for _s, e in spans if e < target]
        starts = [s for s, _e in spans if s > target]
        answer.before = max(ends) if ends else None
        answer.after = min(starts) if starts else None
    return answer
