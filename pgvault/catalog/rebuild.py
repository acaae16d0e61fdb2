"""`pgvault catalog rebuild`: recreate (or reconcile) the catalog from the store alone.

1. List the cluster's prefix (paginated) and group objects by artifact.
2. Read the verification receipts (catalog/export.py): receipted artifacts come back
   verified, with every fact they had, without a request per object.
3. Everything else is described from object metadata (WAL: one HEAD each, in parallel)
   or from its manifest.json (backups) and comes back `stored`: present but not proven.
   A backup directory without manifest.json (the commit marker) is incomplete: reported,
   never catalogued, never restorable.
4. Catalog rows whose objects are gone become `missing`; restorable windows shrink.
5. `--verify` reads back what is not verified yet (or everything) and settles it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pgvault.catalog import transitions
from pgvault.catalog.db import ARTIFACT_COLUMNS, WAL_FACT_COLUMNS, CatalogDB
from pgvault.catalog.export import receipt_root
from pgvault.errors import ManifestError
from pgvault.schemas import FileInfo
from pgvault.schemas.manifest import (
    MANIFEST_NAME,
    LogicalManifest,
    PhysicalManifest,
    parse_artifact_manifest,
)
from pgvault.storage import ObjectInfo, ObjectStore, objmeta
from pgvault.storage.layout import Layout
from pgvault.timeutil import iso, now_iso
from pgvault.walfile import DEFAULT_SEG_SIZE, parse_name

log = logging.getLogger(__name__)
COLUMNS = ARTIFACT_COLUMNS  # a rebuilt row is written whole (expiring/deleted reset)


@dataclass
class RebuildReport:
    objects: int = 0
    receipts: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    verified: int = 0
    unproven: int = 0
    added: list[str] = field(default_factory=list)  # the catalog did not know them
    missing: list[str] = field(default_factory=list)  # catalogued, object gone
    incomplete: list[str] = field(default_factory=list)  # backups without manifest.json
    unknown: list[str] = field(default_factory=list)  # objects that are no artifact
    corrupt: list[str] = field(default_factory=list)  # found by --verify

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, defaultdict) else v) for k, v in self.__dict__.items()}


def _listing(
    store: ObjectStore, layout: Layout, report: RebuildReport, tick: Callable[[int], None]
) -> tuple[dict[tuple[str, str], dict[str, ObjectInfo]], list[ObjectInfo]]:
    groups: dict[tuple[str, str], dict[str, ObjectInfo]] = defaultdict(dict)
    receipts = []
    root = receipt_root(layout) + "/"
    for info in store.list(layout.root + "/"):
        report.objects += 1
        tick(1)
        if info.key.startswith(root):
            receipts.append(info)
            continue
        parsed = layout.parse(info.key)
        if parsed is None:
            if "/.canary/" not in info.key:
                report.unknown.append(info.key)
            continue
        kind, name, filename = parsed
        groups[(kind, name)][filename] = info
    return groups, receipts


def _read_receipts(
    store: ObjectStore, receipts: list[ObjectInfo]
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    timelines: list[dict[str, Any]] = []
    drills: list[dict[str, Any]] = []
    for info in receipts:
        try:
            data = json.loads(store.get_bytes(info.key))
            fmt = data.get("format", "")
            if fmt.startswith("pgvault-wal-index/"):
                for seg in data["segments"]:
                    rows[("wal", seg["name"])] = dict(seg, kind="wal", wal_type="segment")
            elif fmt.startswith("pgvault-receipt/"):
                art = data["artifact"]
                rows[(art["kind"], art["name"])] = art
            elif fmt.startswith("pgvault-timelines/"):
                timelines = list(data["timelines"])
            elif fmt.startswith("pgvault-drill/"):
                drills.append(dict(data["drill"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning(
                "unreadable receipt %s ignored (its artifacts are treated as unproven)", info.key
            )
    return rows, timelines, drills


def _file_from_head(key: str, name: str, info: ObjectInfo) -> FileInfo:
    md = info.metadata
    enc = objmeta.encoding_of(md)
    return FileInfo(
        name=name,
        size=int(md.get("content-size", info.size)),
        sha256=md.get("content-sha256") or md.get("sha256") or "0" * 64,
        key=key,
        stored_size=info.size,
        stored_sha256=md.get("sha256"),
        codec=enc.codec,
        encryption=enc.encryption,
    )


def _backup_columns(manifest: LogicalManifest | PhysicalManifest) -> dict[str, Any]:
    """The catalog columns a backup's manifest fills."""
    row: dict[str, Any] = {
        "backup_id": manifest.backup_id,
        "started_at": manifest.started_at,
        "finished_at": manifest.finished_at,
        "timeline": None,
        "start_lsn": None,
        "end_lsn": None,
        "db": None,
    }
    if isinstance(manifest, PhysicalManifest):
        row.update(
            timeline=manifest.timeline, start_lsn=manifest.start_lsn, end_lsn=manifest.end_lsn
        )
    else:
        row["db"] = manifest.db
    return row


def _describe(
    store: ObjectStore, kind: str, name: str, objs: dict[str, ObjectInfo]
) -> dict[str, Any] | None:
    """A `stored` row from metadata / manifest.json; None for an incomplete backup."""
    now = now_iso()
    if kind in ("wal", "history"):
        (info,) = objs.values()
        head = store.head(info.key) or info
        facts = objmeta.facts_of(head.metadata)
        f = _file_from_head(info.key, name, head)
        row = {k: facts.get(k) for k in WAL_FACT_COLUMNS}
        wal = parse_name(name)  # the name says where it sits, metadata or not
        seg = int(row["seg_size"] or DEFAULT_SEG_SIZE)
        row.update(wal_type=row["wal_type"] or wal.type, timeline=row["timeline"] or wal.timeline)
        if wal.type == "segment" and row["segno"] is None:
            row.update(
                segno=wal.segno(seg),
                seg_size=seg,
                start_lsn=wal.start_lsn(seg),
                end_lsn=wal.start_lsn(seg) + seg,
            )
        files = [f]
        meta = facts
    else:
        manifest_info = objs.get(MANIFEST_NAME)
        if manifest_info is None:
            return None
        manifest = parse_artifact_manifest(store.get_bytes(manifest_info.key), kind, name)
        files = []
        for entry in manifest.files:
            obj = objs.get(entry.name)
            if obj is None:
                return None  # manifest names a file that is not there: incomplete
            head = store.head(obj.key) or obj
            files.append(
                _file_from_head(obj.key, entry.name, head).model_copy(
                    update={"sha256": entry.sha256, "size": entry.size}
                )
            )
        head = store.head(manifest_info.key) or manifest_info
        files.append(_file_from_head(manifest_info.key, MANIFEST_NAME, head))
        meta = manifest.summary()
        row = _backup_columns(manifest)
    row.update(
        kind=kind,
        name=name,
        state="stored",
        state_at=now,
        created_at=now,
        stored_at=now,
        files=[x.model_dump(exclude_none=True) for x in files],
        meta=meta,
        size=sum(x.size for x in files),
        stored_size=sum(x.stored_size or 0 for x in files),
        sha256=files[-1].sha256,
    )
    return row


def _write(catalog: CatalogDB, row: dict[str, Any], report: RebuildReport) -> None:
    values = {c: row.get(c) for c in COLUMNS}
    values["files"] = json.dumps(values["files"] or [])
    values["meta"] = json.dumps(values["meta"] or {}, sort_keys=True, default=str)
    with catalog.transaction() as conn:
        cur = conn.execute(
            "SELECT id, state, sha256, state_at, expiring_at, deleted_at FROM artifacts "
            "WHERE kind=? AND name=?",
            (row["kind"], row["name"]),
        )
        old = cur.fetchone()
        if old is not None:
            # retention's marks stay; a receipt never hides damage found after it was written
            values["expiring_at"], values["deleted_at"] = old[4], old[5]
            receipt_time = row.get("checked_at") or row.get("verified_at") or ""
            if old[1] in ("corrupt", "missing") and str(old[3]) > str(receipt_time):
                return
        if old is None:
            transitions.insert(conn, values)
            report.added.append(f"{row['kind']}/{row['name']}")
        elif old[1] == "verified" and row["state"] != "verified" and old[2] == row["sha256"]:
            return  # the catalog already proved it; the store has it: keep
        else:
            transitions.replace(conn, int(old[0]), values)
        if row["kind"] == "history" and row["state"] == "verified":
            transitions.record_history(conn, row.get("meta") or {})


def _mark_missing(
    catalog: CatalogDB, present: set[tuple[str, str]], report: RebuildReport, listed_at: str
) -> None:
    """Catalogued, not in the listing: missing. Rows the pipeline wrote after the listing
    began are left alone (they may not have been listed yet)."""
    rows = catalog.query(
        "SELECT id, kind, name, timeline, segno, state FROM artifacts "
        "WHERE deleted_at IS NULL AND state IN ('stored', 'verified', 'corrupt') "
        "AND state_at < ? AND created_at < ?",
        (listed_at, listed_at),
    )
    for r in rows:
        if (r["kind"], r["name"]) in present:
            continue
        with catalog.transaction() as conn:
            transitions.reset(conn, r["id"], "missing", now_iso(), "not in the store at rebuild")
        report.missing.append(f"{r['kind']}/{r['name']}")


def _restore_side_tables(
    catalog: CatalogDB, timelines: list[dict[str, Any]], drills: list[dict[str, Any]]
) -> None:
    with catalog.transaction() as conn:
        transitions.restore_timelines(conn, timelines)
        for d in drills:
            conn.execute(
                "INSERT OR IGNORE INTO drills(id, kind, target, backup, started_at, finished_at, "
                "duration_s, result, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    d["id"],
                    d["kind"],
                    d["target"],
                    d["backup"],
                    d["started_at"],
                    d["finished_at"],
                    d["duration_s"],
                    d["result"],
                    d["details"],
                ),
            )


def _matches(receipt: dict[str, Any], objs: dict[str, ObjectInfo]) -> bool:
    """The receipted files are all there, with the sizes that were verified, and none was
    written after that verification (a rewrite would need reading back again)."""
    checked = receipt.get("checked_at") or receipt.get("verified_at")
    if not checked:
        return False
    for f in receipt["files"]:
        obj = objs.get(f["name"])
        if obj is None or obj.size != f.get("stored_size"):
            return False
        if obj.last_modified is not None and iso(obj.last_modified) > checked:
            return False
    return bool(objs)


def rebuild(
    catalog: CatalogDB,
    store: ObjectStore,
    layout: Layout,
    *,
    tick: Callable[[int], None] = lambda _n: None,
    workers: int = 16,
) -> RebuildReport:
    report = RebuildReport()
    listed_at = now_iso()
    groups, receipt_objs = _listing(store, layout, report, tick)
    receipted, timelines, drills = _read_receipts(store, receipt_objs)
    report.receipts = len(receipt_objs)
    present: set[tuple[str, str]] = set()

    def build(item: tuple[tuple[str, str], dict[str, ObjectInfo]]) -> dict[str, Any] | None:
        (kind, name), objs = item
        receipt = receipted.get((kind, name))
        if receipt is not None and _matches(receipt, objs):
            when = receipt.get("verified_at") or now_iso()
            row = {"state_at": when, "created_at": when, "stored_at": when} | receipt
            return row | {
                "kind": kind,
                "state": "verified",
                "deleted_at": None,
                "expiring_at": None,
            }
        try:
            return _describe(store, kind, name, objs)
        except ManifestError as exc:  # unreadable, invalid or of an unknown version
            log.warning("%s; reported as incomplete", exc)
            return None
        except (ValueError, KeyError, TypeError) as exc:  # unusable object metadata
            log.warning("%s/%s: cannot describe it (%s); reported as incomplete", kind, name, exc)
            return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for key, row in zip(groups, pool.map(build, groups.items()), strict=True):
            kind, name = key
            if row is None:
                report.incomplete.append(f"{kind}/{name}")
                continue
            present.add(key)
            report.by_kind[kind] += 1
            if row["state"] == "verified":
                report.verified += 1
            else:
                report.unproven += 1
            _write(catalog, row, report)
            tick(0)
    _mark_missing(catalog, present, report, listed_at)
    _restore_side_tables(catalog, timelines, drills)
    return report


__all__ = ["RebuildReport", "iso", "rebuild"]
