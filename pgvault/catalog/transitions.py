"""Every write to `artifacts`, `wal_runs` and `timelines`: the catalog's state transitions.

A catalog row moves through

    ready -> stored -> verified          (pipeline events, rebuild, re-verification)
    * -> corrupt | missing               (read-back failed, object gone)
    * -> expiring (set / cleared)        (retention marks, or gives back to a lease)
    expiring -> deleted                  (retention removed the objects)

and the derived tables follow it here, in the same transaction, and nowhere else:

- `wal_runs` holds the maximal runs of WAL segments that are *in the chain*: verified,
  not expiring, not deleted (`in_chain`). Each transition compares the row's membership
  before and after and extends, merges or splits the runs accordingly.
- `dirty_blocks` (what catalog/export.py must re-export) is marked when a segment joins or
  leaves the chain, or when a member's facts are rewritten (`rewritten=True`).
- `timelines` learns a timeline's parent and switch point from a verified history file.

Callers (catalog/artifacts.py, reverify.py, rebuild.py, retention/apply.py, restore) decide
*whether* a transition applies; this module is *how* it is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.wal import EXPORT_BLOCK, run_containing
from pgvault.timeutil import now_iso

_CHAIN_COLUMNS = ("timeline", "segno", "state", "expiring_at", "deleted_at")


# -- the WAL chain (wal_runs) ---------------------------------------------------------


def in_chain(row: Mapping[str, Any]) -> bool:
    """A WAL segment counts for the chain: verified, and not being deleted."""
    return (
        row.get("segno") is not None
        and row.get("timeline") is not None
        and row.get("state") == "verified"
        and not row.get("expiring_at")
        and not row.get("deleted_at")
    )


def _dirty(conn: sqlite3.Connection, timeline: int, segno: int) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO dirty_blocks(timeline, block) VALUES (?, ?)",
        (timeline, segno // EXPORT_BLOCK),
    )


def _runs_add(conn: sqlite3.Connection, timeline: int, segno: int) -> None:
    """Segment joined the chain: extend or merge the neighbouring runs."""
    _dirty(conn, timeline, segno)
    if run_containing(conn, timeline, segno):
        return
    left = run_containing(conn, timeline, segno - 1)
    right = conn.execute(
        "SELECT end_segno FROM wal_runs WHERE timeline=? AND start_segno=?",
        (timeline, segno + 1),
    ).fetchone()
    start = left[0] if left else segno
    end = int(right[0]) if right else segno
    if right:
        conn.execute(
            "DELETE FROM wal_runs WHERE timeline=? AND start_segno=?", (timeline, segno + 1)
        )
    if left:
        conn.execute(
            "UPDATE wal_runs SET end_segno=? WHERE timeline=? AND start_segno=?",
            (end, timeline, start),
        )
    else:
        conn.execute(
            "INSERT INTO wal_runs(timeline, start_segno, end_segno) VALUES (?, ?, ?)",
            (timeline, start, end),
        )


def _runs_remove(conn: sqlite3.Connection, timeline: int, segno: int) -> None:
    """Segment left the chain (corrupt, missing, expiring): split its run."""
    _dirty(conn, timeline, segno)
    run = run_containing(conn, timeline, segno)
    if run is None:
        return
    start, end = run
    conn.execute("DELETE FROM wal_runs WHERE timeline=? AND start_segno=?", (timeline, start))
    if start < segno:
        conn.execute(
            "INSERT INTO wal_runs(timeline, start_segno, end_segno) VALUES (?, ?, ?)",
            (timeline, start, segno - 1),
        )
    if segno < end:
        conn.execute(
            "INSERT INTO wal_runs(timeline, start_segno, end_segno) VALUES (?, ?, ?)",
            (timeline, segno + 1, end),
        )


def _position(row: Mapping[str, Any]) -> tuple[int, int]:
    return int(row["timeline"]), int(row["segno"])


def _follow(
    conn: sqlite3.Connection,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    *,
    rewritten: bool,
) -> None:
    """Bring wal_runs in line with one row's change of chain membership."""
    was = before is not None and in_chain(before)
    now = in_chain(after)
    moved = was and now and before is not None and _position(before) != _position(after)
    if was and before is not None and (not now or moved):
        _runs_remove(conn, *_position(before))
    if now and (not was or moved):
        _runs_add(conn, *_position(after))
    elif now and rewritten:
        _dirty(conn, *_position(after))  # same membership, new facts: re-export the block


# -- artifact rows ----------------------------------------------------------------------


def _current(conn: sqlite3.Connection, artifact_id: int) -> dict[str, Any]:
    cols = ", ".join(_CHAIN_COLUMNS)
    found = conn.execute(f"SELECT {cols} FROM artifacts WHERE id=?", (artifact_id,)).fetchone()  # noqa: S608
    if found is None:
        raise KeyError(f"no artifact row {artifact_id}")
    return dict(zip(_CHAIN_COLUMNS, found, strict=True))


def _set(
    conn: sqlite3.Connection,
    artifact_id: int,
    cols: Mapping[str, Any],
    *,
    rewritten: bool = False,
    keep: Mapping[str, Any] | None = None,
) -> None:
    """UPDATE one row and follow it. `keep`: columns set only where still NULL."""
    keep = keep or {}
    before = _current(conn, artifact_id)
    sets = [f"{k}=?" for k in cols] + [f"{k}=COALESCE({k}, ?)" for k in keep]
    conn.execute(
        f"UPDATE artifacts SET {', '.join(sets)} WHERE id=?",  # noqa: S608
        (*cols.values(), *keep.values(), artifact_id),
    )
    after = {**before, **cols}
    after.update({k: v if after.get(k) is None else after[k] for k, v in keep.items()})
    _follow(conn, before, after, rewritten=rewritten)


def insert(conn: sqlite3.Connection, values: Mapping[str, Any]) -> int:
    """A new row (first pipeline event, or a rebuild finding an unknown object)."""
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cur = conn.execute(f"INSERT INTO artifacts({names}) VALUES ({marks})", tuple(values.values()))  # noqa: S608
    _follow(conn, None, values, rewritten=True)
    return int(cur.lastrowid or 0)


def advance(conn: sqlite3.Connection, artifact_id: int, values: Mapping[str, Any]) -> None:
    """ready/stored/verified from a pipeline event: the new state, its stamps and the
    event's facts (`values` carries state, state_at, error=None, *_at stamps, facts)."""
    _set(conn, artifact_id, values)


def reset(
    conn: sqlite3.Connection, artifact_id: int, state: str, at: str, error: str | None
) -> None:
    """corrupt / missing: only the state and error change; what is known of the stored
    object stays."""
    _set(conn, artifact_id, {"state": state, "state_at": at, "error": error})


def refresh_check(conn: sqlite3.Connection, artifact_id: int, at: str, meta_json: str) -> None:
    """A verified row read back again: when (checked_at), and what it proved (meta).
    Not re-exported on its own (the block keeps its earlier receipt)."""
    _set(conn, artifact_id, {"checked_at": at, "meta": meta_json})


def prove(conn: sqlite3.Connection, artifact_id: int, at: str, meta_json: str) -> None:
    """Read back and proved outside the pipeline (`catalog rebuild --verify`): verified,
    first verification time kept, checked now, error cleared."""
    _set(
        conn,
        artifact_id,
        {"state": "verified", "state_at": at, "checked_at": at, "meta": meta_json, "error": None},
        rewritten=True,
        keep={"verified_at": at},
    )


def replace(conn: sqlite3.Connection, artifact_id: int, values: Mapping[str, Any]) -> None:
    """A row rewritten whole (a rebuild describing the object afresh)."""
    _set(conn, artifact_id, values, rewritten=True)


def mark_expiring(conn: sqlite3.Connection, artifact_id: int, at: str) -> None:
    """Retention chose it: it leaves the chain now (first mark kept on a rerun)."""
    _set(conn, artifact_id, {}, keep={"expiring_at": at})


def clear_expiring(conn: sqlite3.Connection, artifact_id: int) -> None:
    """Spared (a restore or drill holds it): back in the chain if verified."""
    _set(conn, artifact_id, {"expiring_at": None})


def mark_deleted(conn: sqlite3.Connection, artifact_id: int, at: str) -> None:
    """Retention removed its objects (it was expiring, hence already off the chain)."""
    _set(conn, artifact_id, {"deleted_at": at})


# -- timelines ------------------------------------------------------------------------


def record_history(conn: sqlite3.Connection, meta: Mapping[str, Any]) -> None:
    """A verified history file: timeline, parent, switch point (keeps `is_current`)."""
    if "timeline" not in meta:
        return
    conn.execute(
        "INSERT INTO timelines(timeline, parent, switchpoint, reason, is_current, recorded_at) "
        "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT(timeline) DO UPDATE SET parent=excluded.parent, "
        "switchpoint=excluded.switchpoint, reason=excluded.reason",
        (
            meta["timeline"],
            meta.get("parent"),
            meta.get("switchpoint"),
            meta.get("reason"),
            now_iso(),
        ),
    )


def set_current_timeline(catalog: CatalogDB, timeline: int) -> None:
    """Production now runs on `timeline` (`restore pitr --as-primary` promoted it)."""
    with catalog.transaction() as conn:
        conn.execute("UPDATE timelines SET is_current = 0 WHERE is_current = 1")
        conn.execute(
            "INSERT INTO timelines(timeline, is_current, recorded_at) VALUES (?, 1, ?) "
            "ON CONFLICT(timeline) DO UPDATE SET is_current = 1",
            (timeline, now_iso()),
        )


def restore_timelines(conn: sqlite3.Connection, timelines: Iterable[Mapping[str, Any]]) -> None:
    """Timelines as exported in the store's receipts (catalog rebuild)."""
    for t in timelines:
        conn.execute(
            "INSERT INTO timelines(timeline, parent, switchpoint, reason, is_current, "
            "recorded_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(timeline) DO UPDATE SET "
            "parent=excluded.parent, switchpoint=excluded.switchpoint, "
            "is_current=excluded.is_current",
            (
                t["timeline"],
                t.get("parent"),
                t.get("switchpoint"),
                t.get("reason"),
                t.get("is_current") or 0,
                t.get("recorded_at") or now_iso(),
            ),
        )


# -- checking the invariant -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainMismatch:
    timeline: int
    stored: list[tuple[int, int]]
    recomputed: list[tuple[int, int]]


def recompute_runs(conn: sqlite3.Connection) -> dict[int, list[tuple[int, int]]]:
    """wal_runs as it must be, from the artifact rows alone (a scan: tests, doctor)."""
    out: dict[int, list[tuple[int, int]]] = {}
    rows = conn.execute(
        "SELECT timeline, segno FROM artifacts WHERE segno IS NOT NULL AND timeline IS NOT NULL "
        "AND state = 'verified' AND expiring_at IS NULL AND deleted_at IS NULL "
        "ORDER BY timeline, segno"
    )
    for tli, segno in rows:
        spans = out.setdefault(int(tli), [])
        if spans and spans[-1][1] >= int(segno) - 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], int(segno)))
        else:
            spans.append((int(segno), int(segno)))
    return out


def chain_mismatches(conn: sqlite3.Connection) -> list[ChainMismatch]:
    """Timelines whose wal_runs differ from what the artifact rows say (empty: in step)."""
    stored: dict[int, list[tuple[int, int]]] = {}
    for tli, a, z in conn.execute(
        "SELECT timeline, start_segno, end_segno FROM wal_runs ORDER BY timeline, start_segno"
    ):
        stored.setdefault(int(tli), []).append((int(a), int(z)))
    expected = recompute_runs(conn)
    return [
        ChainMismatch(t, stored.get(t, []), expected.get(t, []))
        for t in sorted(set(stored) | set(expected))
        if stored.get(t, []) != expected.get(t, [])
    ]
