"""Retention as a catalog decision: what may go, and why everything else stays.

Rules ([retention], defaults from the seed):
- logical: keep `logical_days` per database, and always the newest verified dump of each
  database, whatever its age;
- physical: keep `physical_weeks`, always the newest verified base backup, and the
  anchor of the point-in-time window: the newest verified backup taken at or before
  now - `wal_days` (without it, the oldest WAL kept would be useless); an incremental
  (PostgreSQL 17+) kept for any reason keeps every backup of its chain, so a full goes
  only together with all its incrementals (catalog.chains);
- WAL: every segment from the anchor's start segment onward (all timelines), plus, for
  every other retained backup, its own start..stop segments (restorable to its
  consistent point); history files while any retained segment or backup is on or after
  their timeline; with no verified base backup at all, no WAL is deleted;
- never: anything not yet verified (still in the pipeline), anything an unexpired lease
  (a running restore or drill) covers, nor a row whose name cannot be parsed (it is
  skipped and reported in `skipped`; one bad row never stops retention).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgvault.catalog import retention_queries as q
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.leases import LeaseSet, active
from pgvault.catalog.rows import ArtifactRow, BackupRow
from pgvault.config import RetentionSettings
from pgvault.schemas.events import check_artifact_name
from pgvault.timeutil import iso
from pgvault.walfile import DEFAULT_SEG_SIZE, parse_name, segment_name

PENDING = ("ready", "stored")
UNNEEDED = "needed by no retained base backup and outside the point-in-time window"


@dataclass
class Decision:
    kind: str
    name: str
    remove: bool
    reasons: list[str]


@dataclass
class WalRange:
    timeline: int
    first: int
    last: int
    remove: bool
    reason: str

    def as_dict(self, seg_size: int = DEFAULT_SEG_SIZE) -> dict[str, Any]:
        return {
            "timeline": self.timeline,
            "first": segment_name(self.timeline, self.first, seg_size),
            "last": segment_name(self.timeline, self.last, seg_size),
            "segments": self.last - self.first + 1,
            "reason": self.reason,
        }


@dataclass
class RetentionPlan:
    now: str
    decisions: list[Decision] = field(default_factory=list)  # backups, history, odd WAL files
    wal: list[WalRange] = field(default_factory=list)
    resume: list[tuple[str, str]] = field(default_factory=list)  # expiring, not yet deleted
    anchor: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # rows it cannot parse

    def removed(self, kind: str | None = None) -> list[Decision]:
        return [d for d in self.decisions if d.remove and (kind is None or d.kind == kind)]


def _parseable(rows: list[ArtifactRow], skipped: list[dict[str, str]]) -> list[ArtifactRow]:
    """The rows whose names are what their kind says (schemas.events); the others are
    reported in `skipped` and left alone (kept, never deleted)."""
    good = []
    for row in rows:
        try:
            check_artifact_name(str(row.kind), str(row.name))
        except ValueError as exc:
            skipped.append({"kind": str(row.kind), "name": str(row.name), "problem": str(exc)})
            continue
        good.append(row)
    return good


def _rows(
    catalog: CatalogDB, kind: str, skipped: list[dict[str, str]] | None = None
) -> list[ArtifactRow]:
    return _parseable(q.plannable(catalog, kind), [] if skipped is None else skipped)


def _decide(row: ArtifactRow, keep: list[str], leases: LeaseSet, old_reason: str) -> Decision:
    reasons = list(keep)
    if row.state in PENDING:
        reasons.append(f"not verified yet ({row.state})")
    if leases.covers(row.kind, row.name):
        reasons.append("in use by a running restore or drill")
    return Decision(row.kind, row.name, not reasons, reasons or [old_reason])


def _logical(
    catalog: CatalogDB,
    cfg: RetentionSettings,
    now: datetime,
    leases: LeaseSet,
    skipped: list[dict[str, str]],
) -> list[Decision]:
    cut = iso(now - timedelta(days=cfg.logical_days))
    newest: dict[str, str] = {}
    out = []
    for row in _rows(catalog, "logical", skipped):
        keep = []
        db = str(row.db)
        if row.state == "verified" and db not in newest:
            newest[db] = row.name
            keep.append(f"newest verified dump of {db}")
        if (row.finished_at or "") >= cut:
            keep.append(f"within {cfg.logical_days} days")
        out.append(_decide(row, keep, leases, f"older than {cfg.logical_days} days"))
    return out


def _start_seg(row: BackupRow) -> int:
    """Segment holding a backup's start LSN."""
    return int(row.start_lsn or 0) // row.wal_seg_size


def _stop_seg(row: BackupRow) -> int:
    """Segment holding the last byte before a backup's end LSN."""
    return (max(int(row.end_lsn or 0), 1) - 1) // row.wal_seg_size


def _physical(
    catalog: CatalogDB, cfg: RetentionSettings, now: datetime, leases: LeaseSet, plan: RetentionPlan
) -> tuple[list[Decision], list[BackupRow], BackupRow | None]:
    """Decisions on base backups; the verified ones kept; the anchor of the WAL window."""
    cut = iso(now - timedelta(weeks=cfg.physical_weeks))
    wal_cut = iso(now - timedelta(days=cfg.wal_days))
    rows = [r for r in _rows(catalog, "physical", plan.skipped) if isinstance(r, BackupRow)]
    verified = [r for r in rows if r.state == "verified"]
    anchor = next((r for r in verified if (r.finished_at or "") <= wal_cut), None)
    out: list[Decision] = []
    kept: list[BackupRow] = []
    needed = _chain_needs(rows)
    for row in rows:
        keep = []
        if verified and row is verified[0]:
            keep.append("newest verified base backup")
        if (row.finished_at or "") >= cut:
            keep.append(f"within {cfg.physical_weeks} weeks")
        if anchor is not None and row is anchor:
            keep.append(f"start of the {cfg.wal_days}-day point-in-time window")
        out.append(_decide(row, keep, leases, f"older than {cfg.physical_weeks} weeks"))
    _keep_chains(out, needed)
    for row, decision in zip(rows, out, strict=True):
        if not decision.remove and row.state == "verified":
            kept.append(row)
    if anchor is None and kept:
        anchor = kept[-1]  # all backups are newer than the window: it starts at the oldest
    plan.anchor = anchor.name if anchor else None
    return out, kept, anchor


def _chain_needs(rows: list[BackupRow]) -> dict[str, list[str]]:
    """Per backup name, the backups of its chain before it (incrementals only)."""
    return {r.name: [c for c in r.chain_ids[:-1] if c != r.name] for r in rows}


def _keep_chains(decisions: list[Decision], needed: dict[str, list[str]]) -> None:
    """A kept incremental keeps its whole chain: a full and its incrementals go together."""
    by_name = {d.name: d for d in decisions}
    for d in decisions:
        if d.remove:
            continue
        for ancestor in needed.get(d.name, []):
            parent = by_name.get(ancestor)
            if parent is None:
                continue
            why = f"needed by kept incremental {d.name}"
            if parent.remove:
                parent.remove, parent.reasons = False, [why]
            elif why not in parent.reasons:
                parent.reasons.append(why)


def _wal_ranges(
    catalog: CatalogDB, kept: list[BackupRow], anchor: BackupRow | None, leases: LeaseSet
) -> tuple[list[WalRange], int | None]:
    """Keep/remove ranges of WAL segments per timeline. Returns (ranges, anchor segno)."""
    ranges: list[WalRange] = []
    floor = _start_seg(anchor) if anchor else None
    for b in q.wal_bounds(catalog):
        tli, lo, hi = b.timeline, b.lo, b.hi
        if floor is None:
            ranges.append(WalRange(tli, lo, hi, False, "no verified base backup: all WAL kept"))
            continue
        keep: list[tuple[int, int, str]] = []
        if hi >= floor:
            keep.append((max(lo, floor), hi, "point-in-time window"))
        for r in kept:
            if int(r.timeline or 1) == tli and (anchor is None or r.name != anchor.name):
                a, z = _start_seg(r), _stop_seg(r)
                keep.append((a, z, f"consistency of base backup {r.name}"))
        keep += [
            (a, z, "in use by a running restore or drill") for t, a, z in leases.wal if t == tli
        ]
        ranges += _complement(tli, lo, hi, keep)
    return ranges, floor


def _complement(tli: int, lo: int, hi: int, keep: list[tuple[int, int, str]]) -> list[WalRange]:
    """Split [lo, hi] into kept stretches (merged, with their reasons) and the rest."""
    merged: list[tuple[int, int, list[str]]] = []
    for a, z, why in sorted((max(a, lo), min(z, hi), why) for a, z, why in keep):
        if z < a:
            continue
        if merged and a <= merged[-1][1] + 1:
            first, last, whys = merged[-1]
            merged[-1] = (first, max(last, z), whys if why in whys else [*whys, why])
        else:
            merged.append((a, z, [why]))
    out: list[WalRange] = []
    cursor = lo
    for a, z, whys in merged:
        if a > cursor:
            out.append(WalRange(tli, cursor, a - 1, True, UNNEEDED))
        out.append(WalRange(tli, a, z, False, "; ".join(whys)))
        cursor = z + 1
    if cursor <= hi:
        out.append(WalRange(tli, cursor, hi, True, UNNEEDED))
    return out


def _odd_wal_and_history(
    catalog: CatalogDB,
    ranges: list[WalRange],
    kept: list[BackupRow],
    floor: int | None,
    leases: LeaseSet,
    *,
    skipped: list[dict[str, str]],
) -> list[Decision]:
    kept_tlis = {r.timeline for r in ranges if not r.remove}
    kept_tlis |= {int(r.timeline or 1) for r in kept}
    out = []
    for row in _rows(catalog, "history", skipped):
        tli = parse_name(row.name).timeline
        keep = (
            ["a retained segment or backup is on or after its timeline"]
            if any(t >= tli for t in kept_tlis)
            else []
        )
        out.append(_decide(row, keep, leases, "no retained WAL on or after its timeline"))
    for row in _parseable(q.odd_wal(catalog), skipped):
        wal = parse_name(row.name)
        segno = wal.segno()
        keep = []
        if floor is None or segno >= floor:
            keep.append("point-in-time window")
        for r in kept:
            if int(r.timeline or 1) == wal.timeline and _start_seg(r) <= segno <= _stop_seg(r):
                keep.append(f"belongs to base backup {r.name}")
        out.append(_decide(row, keep, leases, "before the point-in-time window"))
    return out


def plan(catalog: CatalogDB, cfg: RetentionSettings, now: datetime) -> RetentionPlan:
    leases = active(catalog, now)
    result = RetentionPlan(now=iso(now))
    result.decisions += _logical(catalog, cfg, now, leases, result.skipped)
    physical, kept, anchor = _physical(catalog, cfg, now, leases, result)
    result.decisions += physical
    result.wal, floor = _wal_ranges(catalog, kept, anchor, leases)
    result.decisions += _odd_wal_and_history(
        catalog, result.wal, kept, floor, leases, skipped=result.skipped
    )
    result.resume = q.expiring(catalog)
    return result


def segments_to_remove(catalog: CatalogDB, retention: RetentionPlan) -> list[ArtifactRow]:
    """The verified/damaged segment rows inside the remove ranges (pending ones stay)."""
    rows: list[ArtifactRow] = []
    for r in retention.wal:
        if not r.remove:
            continue
        rows += q.removable_segments(catalog, r.timeline, r.first, r.last)
    return rows


def summary(retention: RetentionPlan) -> dict[str, Any]:
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"remove": [], "keep": []}
    )
    for d in retention.decisions:
        groups[d.kind]["remove" if d.remove else "keep"].append(
            {"name": d.name, "reasons": d.reasons}
        )
    wal = {
        "remove": [r.as_dict() for r in retention.wal if r.remove],
        "keep": [r.as_dict() for r in retention.wal if not r.remove],
    }
    return {
        "now": retention.now,
        "anchor": retention.anchor,
        "wal_segments": wal,
        "artifacts": dict(groups),
        "resume": [f"{k}/{n}" for k, n in retention.resume],
        "skipped": retention.skipped,
    }
