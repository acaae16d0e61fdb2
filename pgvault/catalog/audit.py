"""The two passes of the store audit (invariant 13), on the catalog and the store alone.

Listing pass: the store's object list (paginated: S3 list_objects_v2 pages, a directory
walk for the local store), one prefix at a time (each WAL timeline directory, then
`logical/` and `physical/`), against the keys of every retained stored/verified artifact.
A key absent from the listing is confirmed with a HEAD (an upload may have landed after
its prefix was listed) and the artifact becomes `missing` at once: it leaves the WAL chain
and the restorable windows in the same transaction (catalog/transitions.py).

Read-back pass: re-proves sha256 (storage.verified, via catalog/reverify.py) of the
retained verified artifacts not yet proved in the current cycle, newest first (a
backup's time is when it finished, a WAL file's when it arrived, so the newest backups
and the WAL after them come first), within a byte budget per run. A failure marks the
artifact `corrupt`/`missing`; a proof refreshes `checked_at`, which is also the cycle's
cursor (catalog/auditlog.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pgvault.catalog import transitions
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.reverify import Readback, proved_meta, read_files
from pgvault.errors import PgvaultError
from pgvault.log import for_artifact
from pgvault.storage import ObjectStore
from pgvault.storage.layout import Layout
from pgvault.timeutil import now_iso

log = logging.getLogger(__name__)

RETAINED = "deleted_at IS NULL AND expiring_at IS NULL"
AUDITED = f"state IN ('stored', 'verified') AND {RETAINED}"


@dataclass(frozen=True, slots=True)
class Finding:
    """An artifact the audit found missing or damaged in the store."""

    kind: str
    name: str
    state: str  # missing | corrupt
    error: str

    @property
    def subject(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class ListingResult:
    listed: int = 0  # objects in the listed prefixes
    checked: int = 0  # artifacts whose keys were looked for
    findings: list[Finding] = field(default_factory=list)


def _keys(files_json: str | None) -> list[str]:
    return [str(f["key"]) for f in json.loads(files_json or "[]") if f.get("key")]


def _batches(
    catalog: CatalogDB, layout: Layout
) -> Iterator[tuple[str | None, str, tuple[Any, ...]]]:
    """(store prefix listed for the batch, catalog filter, its parameters)."""
    tlis = catalog.query(
        f"SELECT DISTINCT timeline FROM artifacts WHERE kind IN ('wal', 'history') "  # noqa: S608
        f"AND timeline IS NOT NULL AND {AUDITED} ORDER BY timeline"
    )
    for row in tlis:
        tli = int(row["timeline"])
        yield (
            f"{layout.root}/wal/{tli:08X}/",
            "kind IN ('wal', 'history') AND timeline = ?",
            (tli,),
        )
    yield None, "kind IN ('wal', 'history') AND timeline IS NULL", ()
    yield f"{layout.root}/logical/", "kind = 'logical'", ()
    yield f"{layout.root}/physical/", "kind = 'physical'", ()


def _mark(catalog: CatalogDB, row_id: int, finding: Finding, *, states: Sequence[str]) -> bool:
    """Record a finding if the row is still retained and in one of `states`."""
    with catalog.transaction() as conn:
        current = conn.execute(
            f"SELECT state FROM artifacts WHERE id = ? AND {RETAINED}",  # noqa: S608
            (row_id,),
        ).fetchone()
        if current is None or current[0] not in states:
            return False
        transitions.reset(conn, row_id, finding.state, now_iso(), finding.error)
    for_artifact(log, finding.subject).error("store audit: %s", finding.error)
    return True


def listing_pass(catalog: CatalogDB, store: ObjectStore, layout: Layout) -> ListingResult:
    """Compare the store's listing with the catalog; mark absent objects `missing`."""
    result = ListingResult()
    for prefix, where, params in _batches(catalog, layout):
        present: set[str] = set()
        if prefix is not None:
            for info in store.list(prefix):
                present.add(info.key)
            result.listed += len(present)
        absent: list[tuple[int, str, str, str]] = []
        cur = catalog.conn.execute(
            f"SELECT id, kind, name, files FROM artifacts WHERE {where} AND {AUDITED}",  # noqa: S608
            params,
        )
        for row_id, kind, name, files in cur.fetchall():
            result.checked += 1
            for key in _keys(files):
                listed = prefix is not None and key.startswith(prefix)
                if listed and key in present:
                    continue
                if store.head(key) is None:  # confirmed, not a listing race
                    absent.append((int(row_id), str(kind), str(name), key))
                    break
        present.clear()
        for row_id, kind, name, key in absent:
            why = f"{key} is missing from {store.describe()} (store audit listing)"
            finding = Finding(kind, name, "missing", why)
            if _mark(catalog, row_id, finding, states=("stored", "verified")):
                result.findings.append(finding)
    return result


@dataclass
class ReadbackResult:
    objects_read: int = 0
    bytes_read: int = 0
    remaining: int = 0  # artifacts still to prove in this cycle after this run
    remaining_bytes: int = 0
    skipped: int = 0  # superseded by a newer upload (the pipeline records that one)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # the store failed: the run stopped there


def _size(row: dict[str, Any]) -> int:
    if row.get("stored_size") is not None:
        return int(row["stored_size"])
    return sum(int(f.get("stored_size") or 0) for f in json.loads(row["files"] or "[]"))


_DUE = (
    f"FROM artifacts WHERE state = 'verified' AND {RETAINED} "
    "AND (checked_at IS NULL OR checked_at < ?)"
)


def _due(catalog: CatalogDB, since: str, budget: int) -> list[dict[str, Any]]:
    """The next artifacts of the cycle, newest first, within `budget` stored bytes (the
    first one even if it alone is larger, so every run makes progress)."""
    cur = catalog.conn.execute(
        f"SELECT id, kind, name, files, meta, stored_size {_DUE} "
        "ORDER BY COALESCE(finished_at, created_at) DESC, id DESC",
        (since,),
    )
    cols = [c[0] for c in cur.description]
    picked: list[dict[str, Any]] = []
    spent = 0
    for values in cur:
        row = dict(zip(cols, values, strict=True))
        size = _size(row)
        if picked and spent + size > budget:
            break
        picked.append(row)
        spent += size
        if spent >= budget:
            break
    cur.close()
    return picked


def readback_pass(
    catalog: CatalogDB,
    store: ObjectStore,
    identities: Sequence[Any],
    *,
    since: str,
    budget: int,
    workers: int = 4,
) -> ReadbackResult:
    """Re-prove the next artifacts of the cycle started at `since`. A store failure
    (StoreError) propagates after what was read so far is recorded."""
    result = ReadbackResult()
    rows = _due(catalog, since, budget)

    def read(row: dict[str, Any]) -> tuple[dict[str, Any], Readback]:
        return row, read_files(store, json.loads(row["files"] or "[]"), identities)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        try:
            for row, outcome in pool.map(read, rows):
                _record(catalog, row, outcome, result)
        except PgvaultError as exc:
            result.error = str(exc)
    left = catalog.conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(stored_size), 0) {_DUE}",
        (since,),
    ).fetchone()
    result.remaining = max(0, int(left[0]) - result.skipped)
    result.remaining_bytes = int(left[1])
    return result


def _record(
    catalog: CatalogDB, row: dict[str, Any], outcome: Readback, result: ReadbackResult
) -> None:
    result.objects_read += 1
    result.bytes_read += outcome.bytes_read
    subject = f"{row['kind']}/{row['name']}"
    if outcome.superseded:
        for_artifact(log, subject).info("store audit: %s; left to the pipeline", outcome.error)
        result.skipped += 1
        return
    if outcome.state is None:
        with catalog.transaction() as conn:
            transitions.refresh_check(conn, row["id"], now_iso(), proved_meta(row["meta"], outcome))
        return
    finding = Finding(row["kind"], row["name"], outcome.state, str(outcome.error))
    if _mark(catalog, row["id"], finding, states=("verified",)):
        result.findings.append(finding)
