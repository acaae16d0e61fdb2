"""Carrying out a retention plan, safely under a crash at any point.

    1. mark every victim `expiring` (one transaction per batch); WAL segments also leave
       the verified chain, so `catalog restorable` stops counting on them at once
    2. delete its objects from the store (batched), then its spool copy
    3. mark it `deleted`

A rerun picks up whatever is `expiring` but not `deleted` and finishes it. A deletion
that fails stays `expiring`, is reported, and is retried by the next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pgvault.catalog import transitions
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.leases import active
from pgvault.catalog.retention_queries import live
from pgvault.catalog.rows import ArtifactRow
from pgvault.errors import StoreError
from pgvault.retention.policy import RetentionPlan, segments_to_remove
from pgvault.spool.scan import locate
from pgvault.storage import ObjectStore
from pgvault.timeutil import now_iso

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class ApplyReport:
    deleted: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def victims(catalog: CatalogDB, retention: RetentionPlan) -> list[ArtifactRow]:
    rows = segments_to_remove(catalog, retention)
    for d in retention.removed():
        rows += live(catalog, d.kind, d.name)
    for kind, name in retention.resume:
        rows += live(catalog, kind, name)
    seen: set[int | None] = set()
    return [r for r in rows if not (r.id in seen or seen.add(r.id))]  # type: ignore[func-returns-value]


def _mark_expiring(catalog: CatalogDB, rows: list[ArtifactRow]) -> None:
    now = now_iso()
    for start in range(0, len(rows), BATCH):
        with catalog.transaction() as conn:
            for r in rows[start : start + BATCH]:
                transitions.mark_expiring(conn, _id(r), now)


def _id(row: ArtifactRow) -> int:
    assert row.id is not None, row.subject
    return row.id


def _spare_leased(catalog: CatalogDB, batch: list[ArtifactRow]) -> list[ArtifactRow]:
    """A restore or drill that started after the plan was made: give back what it holds."""
    leases = active(catalog)
    held = [r for r in batch if leases.covers(r.kind, r.name, r.timeline, r.segno)]
    if held:
        with catalog.transaction() as conn:
            for r in held:
                transitions.clear_expiring(conn, _id(r))
        log.info("retention: %d item(s) spared, a restore or drill now holds them", len(held))
    return [r for r in batch if r not in held]


def apply(
    catalog: CatalogDB, store: ObjectStore, spool_dir: Any, retention: RetentionPlan
) -> ApplyReport:
    rows = victims(catalog, retention)
    report = ApplyReport()
    _mark_expiring(catalog, rows)
    for start in range(0, len(rows), BATCH):
        batch = _spare_leased(catalog, rows[start : start + BATCH])
        try:
            store.delete_many([k for r in batch for k in r.store_keys()])
        except StoreError as exc:
            report.failed += [r.subject for r in batch]
            log.error(
                "retention: store deletion failed (%s); %d item(s) stay expiring and "
                "are retried next run",
                exc,
                len(batch),
            )
            continue
        now = now_iso()
        with catalog.transaction() as conn:
            for r in batch:
                art = locate(spool_dir, r.kind, r.name)
                if art is not None:
                    art.discard()
                transitions.mark_deleted(conn, _id(r), now)
                report.deleted[r.kind] = report.deleted.get(r.kind, 0) + 1
        report.bytes_freed += sum(int(f.get("stored_size") or 0) for r in batch for f in r.files)
    return report
