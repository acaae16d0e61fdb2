"""Which tablespaces a restore will meet while replaying WAL, from the catalog's facts.

The upload stage records, per WAL segment, every CREATE/DROP TABLESPACE record that
pg_waldump finds (op, oid, original location, LSN), whether a record that straddles into
the next segment could be one, and `tblspc_scan` (the version of that scan). A segment
catalogued before the scan existed has no `tblspc_scan`: a restore must scan it itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TablespaceEvent:
    segment: str
    lsn: str
    op: str  # create | drop
    oid: int
    location: str

    def as_dict(self) -> dict[str, object]:
        return {
            "segment": self.segment,
            "lsn": self.lsn,
            "op": self.op,
            "oid": self.oid,
            "location": self.location,
        }


@dataclass
class ReplayTablespaces:
    """Tablespace facts of the WAL a restore replays (timeline, first, last segno ranges)."""

    ranges: list[tuple[int, int, int]]
    events: list[TablespaceEvent] = field(default_factory=list)
    straddles: list[str] = field(default_factory=list)  # segments to check with the next one
    unscanned: list[str] = field(default_factory=list)  # catalogued before the facts existed

    @property
    def created(self) -> list[TablespaceEvent]:
        return [e for e in self.events if e.op == "create"]


def replay_tablespaces(
    conn: sqlite3.Connection, ranges: Iterable[tuple[int, int, int]]
) -> ReplayTablespaces:
    out = ReplayTablespaces(ranges=[(int(t), int(a), int(b)) for t, a, b in ranges])
    for timeline, first, last in out.ranges:
        rows = conn.execute(
            "SELECT name, meta FROM artifacts WHERE kind = 'wal' AND timeline = ? "
            "AND segno BETWEEN ? AND ? AND segno IS NOT NULL AND deleted_at IS NULL "
            "AND (json_extract(meta, '$.tblspc_scan') IS NULL "
            "OR json_array_length(meta, '$.tablespaces') > 0 "
            "OR json_extract(meta, '$.tblspc_straddle') IS NOT NULL) ORDER BY segno",
            (timeline, first, last),
        ).fetchall()
        for name, meta_text in rows:
            meta = json.loads(meta_text or "{}")
            if meta.get("tblspc_scan") is None:
                out.unscanned.append(str(name))
                continue
            if meta.get("tblspc_straddle"):
                out.straddles.append(str(name))
            for rec in meta.get("tablespaces") or []:
                out.events.append(
                    TablespaceEvent(
                        segment=str(name),
                        lsn=str(rec["lsn"]),
                        op=str(rec["op"]),
                        oid=int(rec["oid"]),
                        location=str(rec.get("location") or ""),
                    )
                )
    return out
