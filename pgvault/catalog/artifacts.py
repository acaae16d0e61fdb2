"""Recording pipeline events: an idempotent, order-tolerant state machine.

States advance ready -> stored -> verified. `corrupt` and `missing` (set by verify when
read-back fails) move a row back, and a later stored/verified event (re-upload, repair)
moves it forward again. Events can arrive twice or out of order (redelivery, retries),
so a transition is applied only if it moves forward, or if it is a reset/recovery newer
than the current state. The same event applied twice changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from pgvault.catalog import transitions
from pgvault.catalog.db import BACKUP_FACT_COLUMNS, WAL_FACT_COLUMNS, CatalogDB
from pgvault.schemas import ArtifactEvent
from pgvault.timeutil import iso

RANK = {"ready": 0, "stored": 1, "verified": 2}
RESETS = ("corrupt", "missing")
_META_COLUMNS = (*WAL_FACT_COLUMNS, *BACKUP_FACT_COLUMNS)


@dataclass(frozen=True)
class Outcome:
    action: str  # inserted | advanced | reset | refreshed | ignored | conflict
    state: str
    detail: str = ""


def _should_apply(current: str, current_at: str, new: str, new_at: str) -> bool:
    if new in RESETS:
        return new_at >= current_at and current != new
    if current in RESETS:
        return new_at > current_at
    return RANK[new] > RANK[current]


def _columns(event: ArtifactEvent) -> dict[str, Any]:
    cols: dict[str, Any] = {k: event.meta[k] for k in _META_COLUMNS if k in event.meta}
    files = [f.model_dump(exclude_none=True) for f in event.files]
    cols.update(
        files=json.dumps(files),
        meta=json.dumps(event.meta, sort_keys=True, default=str),
        size=sum(f.size for f in event.files),
        sha256=event.sha256,
    )
    if all(f.stored_size is not None for f in event.files):
        cols["stored_size"] = sum(f.stored_size or 0 for f in event.files)
    return cols


def _record_timeline(conn: sqlite3.Connection, event: ArtifactEvent) -> None:
    if event.kind == "history":
        transitions.record_history(conn, event.meta)


def _insert(conn: sqlite3.Connection, event: ArtifactEvent, event_at: str) -> Outcome:
    cols = _columns(event)
    cols.update(
        kind=event.kind,
        name=event.name,
        state=event.state,
        state_at=event_at,
        created_at=event_at,
        error=event.error,
    )
    cols.update(_stamps(event.state, event_at))
    transitions.insert(conn, cols)
    if event.state == "verified":
        _record_timeline(conn, event)
    return Outcome("inserted", event.state)


def _stamps(state: str, at: str) -> dict[str, str]:
    if state == "stored":
        return {"stored_at": at}
    if state == "verified":
        return {"verified_at": at, "checked_at": at}
    return {}


def _update(
    conn: sqlite3.Connection, row: dict[str, Any], event: ArtifactEvent, event_at: str
) -> Outcome:
    if row["sha256"] and row["sha256"] != event.sha256:
        return Outcome(
            "conflict",
            row["state"],
            f"catalogued with sha256 {row['sha256'][:12]}..., event has {event.sha256[:12]}...",
        )
    if row["deleted_at"]:
        return Outcome("ignored", row["state"], "artifact was deleted by retention")
    if event.state == row["state"] == "verified":
        # a re-verification: when it was read back, and what it proved (content_verified)
        meta = json.dumps(event.meta, sort_keys=True, default=str)
        transitions.refresh_check(conn, row["id"], event_at, meta)
        return Outcome("refreshed", row["state"])
    if not _should_apply(row["state"], row["state_at"], event.state, event_at):
        return Outcome("ignored", row["state"])
    if event.state in RESETS:
        # keep what we know about the stored object; only the state and error change
        transitions.reset(conn, row["id"], event.state, event_at, event.error)
    else:
        cols = _columns(event)
        cols.update(state=event.state, state_at=event_at, error=None)
        cols.update(_stamps(event.state, event_at))
        transitions.advance(conn, row["id"], cols)
    if event.state == "verified":
        _record_timeline(conn, event)
    return Outcome("reset" if event.state in RESETS else "advanced", event.state)


def apply_event(catalog: CatalogDB, event: ArtifactEvent) -> Outcome:
    """Record one artifact event atomically. Safe to call again with the same event."""
    event_at = iso(event.created_at)
    with catalog.transaction() as conn:
        cur = conn.execute(
            "SELECT * FROM artifacts WHERE kind=? AND name=?", (event.kind, event.name)
        )
        found = cur.fetchone()
        if found is None:
            return _insert(conn, event, event_at)
        row = dict(zip([c[0] for c in cur.description], found, strict=True))
        return _update(conn, row, event, event_at)
