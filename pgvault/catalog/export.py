"""Verification receipts in the store, so the catalog can be rebuilt exactly from it.

The store alone says what exists (listing) and what each object is (metadata, manifests),
but not what was verified: that is the catalog's knowledge. The producer therefore
exports it next to the data, as small plain JSON objects (names, sizes, checksums, LSNs,
times: nothing from the data):

    {root}/catalog/wal/{tli:08X}/{block:08X}.json   verified segments of one block of
                                                    1024 segment numbers, with their facts
    {root}/catalog/{kind}/{name}.json                one verified base backup / dump / history
    {root}/catalog/walfile/{name}.json               one verified .backup / .partial WAL file
    {root}/catalog/drills/{id}.json                  one drill record
    {root}/catalog/timelines.json                    timelines and which one is current

A rebuild reads these first (a million segments are a thousand index objects, not a
million HEAD requests) and marks exactly the receipted objects verified. Export is
incremental: a block or receipt is rewritten only when its fingerprint changes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.wal import EXPORT_BLOCK
from pgvault.storage import ObjectStore
from pgvault.storage.layout import Layout
from pgvault.timeutil import now_iso

log = logging.getLogger(__name__)
BLOCK = EXPORT_BLOCK
WAL_FIELDS = (
    "name",
    "timeline",
    "segno",
    "seg_size",
    "start_lsn",
    "end_lsn",
    "first_commit",
    "last_commit",
    "size",
    "stored_size",
    "sha256",
    "files",
    "meta",
    "verified_at",
    "checked_at",
)


@dataclass
class ExportStats:
    written: int = 0
    deleted: int = 0


def receipt_root(layout: Layout) -> str:
    return f"{layout.root}/catalog"


def _put_json(store: ObjectStore, key: str, data: Any) -> None:
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    store.put_bytes(key, body, {"pgvault-kind": "receipt", "pgvault-encryption": "none"})


def _changed(catalog: CatalogDB, key: str, fingerprint: str) -> bool:
    row = catalog.query("SELECT fingerprint FROM exports WHERE key=?", (key,))
    return not row or row[0]["fingerprint"] != fingerprint


def _mark(catalog: CatalogDB, key: str, fingerprint: str | None) -> None:
    with catalog.transaction() as conn:
        if fingerprint is None:
            conn.execute("DELETE FROM exports WHERE key=?", (key,))
        else:
            conn.execute(
                "INSERT INTO exports(key, fingerprint, exported_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET fingerprint=excluded.fingerprint, "
                "exported_at=excluded.exported_at",
                (key, fingerprint, now_iso()),
            )


def _wal_blocks(catalog: CatalogDB, store: ObjectStore, root: str, stats: ExportStats) -> None:
    """Rewrite the index object of every block whose verified segments changed (the chain
    bookkeeping marks them dirty); the first export covers every block."""
    first = not catalog.query("SELECT 1 FROM exports WHERE key LIKE ? LIMIT 1", (f"{root}/wal/%",))
    if first:
        blocks = catalog.query(
            "SELECT DISTINCT timeline, segno / ? AS block FROM artifacts WHERE kind = 'wal' "
            "AND segno IS NOT NULL AND state = 'verified'",
            (BLOCK,),
        )
    else:
        blocks = catalog.query("SELECT timeline, block FROM dirty_blocks")
    for b in blocks:
        key = f"{root}/wal/{b['timeline']:08X}/{b['block']:08X}.json"
        cols = ", ".join(WAL_FIELDS)
        rows = catalog.query(
            f"SELECT {cols} FROM artifacts WHERE kind = 'wal' AND segno IS NOT NULL "  # noqa: S608
            "AND state = 'verified' AND deleted_at IS NULL AND expiring_at IS NULL "
            "AND timeline = ? AND segno BETWEEN ? AND ? ORDER BY segno",
            (b["timeline"], b["block"] * BLOCK, b["block"] * BLOCK + BLOCK - 1),
        )
        if rows:
            for row in rows:
                row["files"] = json.loads(row["files"])
                row["meta"] = json.loads(row["meta"])
            _put_json(
                store,
                key,
                {
                    "format": "pgvault-wal-index/1",
                    "timeline": b["timeline"],
                    "block": b["block"],
                    "segments": rows,
                },
            )
            _mark(catalog, key, f"{len(rows)}:{now_iso()}")
            stats.written += 1
        elif catalog.query("SELECT 1 FROM exports WHERE key = ?", (key,)):
            store.delete(key)  # no verified segment left in the block (retention, damage)
            _mark(catalog, key, None)
            stats.deleted += 1
        with catalog.transaction() as conn:
            conn.execute(
                "DELETE FROM dirty_blocks WHERE timeline = ? AND block = ?",
                (b["timeline"], b["block"]),
            )


def _receipt_dir(kind: str) -> str:
    """WAL segments are receipted in blocks under wal/; other WAL files (.backup, .partial)
    one by one under walfile/."""
    return "walfile" if kind == "wal" else kind


def _receipts(catalog: CatalogDB, store: ObjectStore, root: str, stats: ExportStats) -> None:
    rows = catalog.query(  # two indexed halves: backups/history, then WAL files off the chain
        "SELECT * FROM artifacts WHERE kind IN ('logical', 'physical', 'history') "
        "AND state = 'verified' AND deleted_at IS NULL AND expiring_at IS NULL "
        "UNION ALL SELECT * FROM artifacts WHERE kind = 'wal' AND segno IS NULL "
        "AND state = 'verified' AND deleted_at IS NULL AND expiring_at IS NULL"
    )
    live = set()
    for row in rows:
        key = f"{root}/{_receipt_dir(row['kind'])}/{row['name']}.json"
        live.add(key)
        fingerprint = str(row["checked_at"])
        if not _changed(catalog, key, fingerprint):
            continue
        artifact = dict(row, files=json.loads(row["files"]), meta=json.loads(row["meta"]))
        artifact.pop("id", None)
        _put_json(store, key, {"format": "pgvault-receipt/1", "artifact": artifact})
        _mark(catalog, key, fingerprint)
        stats.written += 1
    for kind in ("logical", "physical", "history", "wal"):
        prefix = f"{root}/{_receipt_dir(kind)}/%"
        for row in catalog.query("SELECT key FROM exports WHERE key LIKE ?", (prefix,)):
            if row["key"] not in live:
                store.delete(row["key"])
                _mark(catalog, row["key"], None)
                stats.deleted += 1


def _drills_and_timelines(
    catalog: CatalogDB, store: ObjectStore, root: str, stats: ExportStats, *, encrypted: bool
) -> None:
    for drill in catalog.query("SELECT * FROM drills"):
        key = f"{root}/drills/{drill['id']:08d}.json"
        if _changed(catalog, key, str(drill["finished_at"])):
            # with encryption on, details (table names, row counts) stay out of plain receipts
            record = dict(drill, details="{}") if encrypted else drill
            _put_json(store, key, {"format": "pgvault-drill/1", "drill": record})
            _mark(catalog, key, str(drill["finished_at"]))
            stats.written += 1
    timelines = catalog.query("SELECT * FROM timelines ORDER BY timeline")
    key = f"{root}/timelines.json"
    fingerprint = json.dumps(timelines, sort_keys=True, default=str)
    if timelines and _changed(catalog, key, fingerprint):
        _put_json(store, key, {"format": "pgvault-timelines/1", "timelines": timelines})
        _mark(catalog, key, fingerprint)
        stats.written += 1


def export(
    catalog: CatalogDB, store: ObjectStore, layout: Layout, *, encrypted: bool = False
) -> ExportStats:
    """Bring the store's receipts in line with the catalog (idempotent, incremental)."""
    root = receipt_root(layout)
    stats = ExportStats()
    _wal_blocks(catalog, store, root, stats)
    _receipts(catalog, store, root, stats)
    _drills_and_timelines(catalog, store, root, stats, encrypted=encrypted)
    if stats.written or stats.deleted:
        log.info("catalog export: %d receipt(s) written, %d removed", stats.written, stats.deleted)
    return stats
