"""The WAL chain: contiguous verified runs per timeline, and gaps in them.

`wal_runs` holds one row per maximal run of verified segments [start_segno, end_segno]
in a timeline. catalog/transitions.py updates it in the same transaction as a segment's
state, so "is the chain contiguous from A to B" and "where are the gaps" cost a few index
lookups, not a scan of millions of segment rows. This module only reads it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from pgvault.walfile import DEFAULT_SEG_SIZE, segment_name

PENDING_STATES = ("ready", "stored")
MAX_LISTED = 20


def run_containing(conn: sqlite3.Connection, timeline: int, segno: int) -> tuple[int, int] | None:
    row = conn.execute(
        "SELECT start_segno, end_segno FROM wal_runs WHERE timeline=? AND start_segno<=? "
        "ORDER BY start_segno DESC LIMIT 1",
        (timeline, segno),
    ).fetchone()
    if row and row[1] >= segno:
        return int(row[0]), int(row[1])
    return None


EXPORT_BLOCK = 1024  # segments per verification receipt (catalog/export.py)


def runs(conn: sqlite3.Connection, timeline: int) -> list[tuple[int, int]]:
    return [
        (int(a), int(b))
        for a, b in conn.execute(
            "SELECT start_segno, end_segno FROM wal_runs WHERE timeline=? ORDER BY start_segno",
            (timeline,),
        )
    ]


def timelines_with_segments(conn: sqlite3.Connection) -> list[int]:
    """Distinct timelines by index hops (no scan of the segment rows)."""
    found: list[int] = []
    last = -1
    while True:
        row = conn.execute(
            "SELECT MIN(timeline) FROM artifacts WHERE segno IS NOT NULL AND timeline > ?",
            (last,),
        ).fetchone()
        if row is None or row[0] is None:
            return found
        last = int(row[0])
        found.append(last)


@dataclass
class Hole:
    first_segno: int
    last_segno: int
    absent: int = 0
    corrupt: int = 0
    missing: int = 0
    pending: int = 0
    names: list[str] = field(default_factory=list)  # up to MAX_LISTED non-verified names

    @property
    def count(self) -> int:
        return self.last_segno - self.first_segno + 1

    @property
    def is_gap(self) -> bool:
        """Only in-flight segments (ready/stored) is not a gap yet."""
        return self.absent + self.corrupt + self.missing > 0


@dataclass
class TimelineChain:
    timeline: int
    seg_size: int
    first_segno: int
    last_segno: int
    segments: int  # catalogued segment rows in [first, last]
    verified: int
    holes: list[Hole]

    @property
    def gaps(self) -> list[Hole]:
        return [h for h in self.holes if h.is_gap]

    def name(self, segno: int) -> str:
        return segment_name(self.timeline, segno, self.seg_size)


def chain(conn: sqlite3.Connection, timeline: int) -> TimelineChain:
    # two single-aggregate queries: SQLite answers each from one end of the index
    lo, hi = (
        conn.execute(
            f"SELECT {agg}(segno) FROM artifacts WHERE segno IS NOT NULL AND timeline=?",  # noqa: S608
            (timeline,),
        ).fetchone()[0]
        for agg in ("MIN", "MAX")
    )
    size_row = conn.execute(
        "SELECT seg_size FROM artifacts WHERE segno IS NOT NULL AND timeline=? AND segno=?",
        (timeline, lo),
    ).fetchone()
    seg_size = int(size_row[0] or DEFAULT_SEG_SIZE) if size_row else DEFAULT_SEG_SIZE
    verified_runs = runs(conn, timeline)
    holes: list[Hole] = []
    cursor = int(lo)
    for start, end in verified_runs:
        if start > cursor:
            holes.append(Hole(cursor, start - 1))
        cursor = max(cursor, end + 1)
    if cursor <= hi:
        holes.append(Hole(cursor, int(hi)))
    for hole in holes:
        rows = conn.execute(
            "SELECT segno, state FROM artifacts WHERE segno IS NOT NULL AND timeline=? "
            "AND segno BETWEEN ? AND ? ORDER BY segno",
            (timeline, hole.first_segno, hole.last_segno),
        ).fetchall()
        states = {int(s): str(st) for s, st in rows}
        hole.absent = hole.count - len(states)
        for state in states.values():
            if state in PENDING_STATES:
                hole.pending += 1
            elif state == "missing":
                hole.missing += 1
            else:
                hole.corrupt += 1
        for segno in range(hole.first_segno, hole.last_segno + 1):
            if len(hole.names) >= MAX_LISTED or not hole.is_gap:
                break
            if states.get(segno) not in PENDING_STATES:
                hole.names.append(segment_name(timeline, segno, seg_size))
    verified = sum(b - a + 1 for a, b in verified_runs)
    present = verified + sum(h.count - h.absent for h in holes)  # no COUNT(*) over millions
    return TimelineChain(timeline, seg_size, int(lo), int(hi), present, verified, holes)


def chains(conn: sqlite3.Connection) -> list[TimelineChain]:
    return [chain(conn, t) for t in timelines_with_segments(conn)]
