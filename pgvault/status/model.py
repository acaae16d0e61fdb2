"""One `StatusView` per cluster: the verdict of the checks (run by checks/runner.py, not
duplicated here), the stage queues, the restorable windows and gaps, the newest backups,
the WAL lag, the last drills, and the failing checks; plus the timeline marks of the last
N days for the status page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.queries import artifact, list_artifacts, newest_backups
from pgvault.catalog.restorable import logical_options, merged, windows
from pgvault.catalog.rows import ArtifactRow, DrillRow
from pgvault.catalog.runs import drills_since, last_drills
from pgvault.catalog.wal import TimelineChain, chains
from pgvault.checks.base import CheckResult, Status
from pgvault.checks.runner import Report, run_checks
from pgvault.config import Settings
from pgvault.errors import PgvaultError
from pgvault.timeutil import iso, parse_iso
from pgvault.walfile import parse_name


@dataclass(frozen=True, slots=True)
class QueueState:
    stage: str
    queue: str
    consumers: int
    ready: int
    retrying: int

    @property
    def consumed(self) -> bool:
        return self.consumers > 0


@dataclass(frozen=True, slots=True)
class Backup:
    """The newest verified backup of a database (a dump) or of the cluster (a base backup)."""

    kind: str  # logical | physical
    db: str | None
    name: str
    finished_at: str
    age_s: float
    size: int | None
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class Gap:
    timeline: int
    first: str
    last: str
    count: int
    after: str | None  # the last time known before the hole (previous segment's last commit)
    before: str | None  # the first time known after it (next segment's arrival)


@dataclass(frozen=True, slots=True)
class Mark:
    """A point on the timeline: a base backup, a dump or a drill."""

    kind: str  # physical | logical | drill
    at: str
    label: str
    ok: bool = True


@dataclass
class StatusView:
    cluster: str
    checked_at: str
    status: Status
    queues: list[QueueState] = field(default_factory=list)
    queues_error: str | None = None
    windows: list[tuple[str, str]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    backups: list[Backup] = field(default_factory=list)
    wal_lag_s: float | None = None
    wal_lag_segments: int | None = None  # archived by PostgreSQL but not verified yet
    spool_unverified: int | None = None
    drills: list[DrillRow] = field(default_factory=list)
    failing: list[CheckResult] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    catalog_error: str | None = None
    days: int = 14

    @property
    def verdict(self) -> str:
        return self.status.name

    @property
    def exit_code(self) -> int:
        return int(self.status)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def as_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "ok": self.ok,
            "status": self.verdict,
            "exit_code": self.exit_code,
            "checked_at": self.checked_at,
            "queues": [
                {
                    "stage": q.stage,
                    "queue": q.queue,
                    "consumers": q.consumers,
                    "consumed": q.consumed,
                    "ready": q.ready,
                    "retrying": q.retrying,
                }
                for q in self.queues
            ],
            "queues_error": self.queues_error,
            "restorable": [{"start": s, "end": e} for s, e in self.windows],
            "gaps": [
                {
                    "timeline": g.timeline,
                    "first": g.first,
                    "last": g.last,
                    "count": g.count,
                    "after": g.after,
                    "before": g.before,
                }
                for g in self.gaps
            ],
            "backups": [
                {
                    "kind": b.kind,
                    "db": b.db,
                    "name": b.name,
                    "finished_at": b.finished_at,
                    "age_s": round(b.age_s, 1),
                    "size": b.size,
                    "duration_s": b.duration_s,
                }
                for b in self.backups
            ],
            "wal_lag": {
                "seconds": self.wal_lag_s,
                "segments": self.wal_lag_segments,
                "spool_unverified": self.spool_unverified,
            },
            "drills": [
                {
                    "kind": d.kind,
                    "target": d.target,
                    "backup": d.backup,
                    "finished_at": d.finished_at,
                    "duration_s": d.duration_s,
                    "result": d.result,
                    "ok": d.result == "ok",
                }
                for d in self.drills
            ],
            "failing": [r.as_json(self.cluster) for r in self.failing],
            "catalog_error": self.catalog_error,
        }


def _queues(view: StatusView, results: list[CheckResult]) -> None:
    for r in results:
        if r.name != "queues":
            continue
        if r.subject == "broker" and r.status is not Status.OK:
            view.queues_error = r.message
        elif "consumers" in r.details:
            view.queues.append(
                QueueState(
                    stage=r.subject,
                    queue=str(r.details["queue"]),
                    consumers=int(r.details["consumers"]),
                    ready=int(r.details["ready"]),
                    retrying=int(r.details["retrying"]),
                )
            )


def _segno(name: str) -> int | None:
    try:
        return parse_name(name).segno()
    except ValueError:
        return None


def _lag(view: StatusView, results: list[CheckResult]) -> None:
    for r in results:
        if r.name != "upload_lag":
            continue
        if r.subject == "spool":
            view.spool_unverified = r.details.get("unverified")
        elif r.subject == "wal":
            view.wal_lag_s = r.value
            newest, archived = r.details.get("newest_verified"), r.details.get("last_archived_wal")
            if newest and archived:
                a, b = _segno(str(archived)), _segno(str(newest))
                if a is not None and b is not None:
                    view.wal_lag_segments = max(0, a - b)


def _age(now: datetime, stamp: str) -> float:
    return (now - parse_iso(stamp)).total_seconds()


def _duration(row: ArtifactRow) -> float | None:
    if row.started_at and row.finished_at:
        return (parse_iso(row.finished_at) - parse_iso(row.started_at)).total_seconds()
    return None


def _backup(now: datetime, row: ArtifactRow) -> Backup:
    at = str(row.backup_time)
    return Backup(row.kind, row.db, row.name, at, _age(now, at), row.size, _duration(row))


def _segment_time(catalog: CatalogDB, ch: TimelineChain, segno: int, last: bool) -> str | None:
    if segno < 0:
        return None
    row = artifact(catalog, "wal", ch.name(segno))
    if row is None:
        return None
    return (row.last_commit or row.created_at) if last else (row.first_commit or row.created_at)


def _catalog_part(view: StatusView, catalog: CatalogDB, now: datetime) -> None:
    ws = windows(catalog)
    view.windows = merged(ws)
    for ch in chains(catalog.conn):
        for hole in ch.gaps:
            view.gaps.append(
                Gap(
                    timeline=ch.timeline,
                    first=ch.name(hole.first_segno),
                    last=ch.name(hole.last_segno),
                    count=hole.count,
                    after=_segment_time(catalog, ch, hole.first_segno - 1, True),
                    before=_segment_time(catalog, ch, hole.last_segno + 1, False),
                )
            )
    for option in logical_options(catalog):
        dump = artifact(catalog, "logical", option.name)
        if dump is not None:
            view.backups.append(_backup(now, dump))
    for base in newest_backups(catalog, "physical", None, 1):
        view.backups.append(_backup(now, base))
    view.drills = last_drills(catalog)
    since = iso(now - timedelta(days=view.days))
    for kind in ("physical", "logical"):
        for row in list_artifacts(catalog, kind=kind, state="verified"):
            at = row.backup_time
            if at and at >= since:
                label = row.name if kind == "physical" else f"{row.db}: {row.name}"
                view.marks.append(Mark(kind, at, label))
    for drill in drills_since(catalog, since):
        view.marks.append(
            Mark(
                "drill",
                drill.finished_at,
                f"{drill.kind} drill of {drill.target} ({drill.result})",
                ok=drill.result == "ok",
            )
        )


def build(settings: Settings, days: int = 14, report: Report | None = None) -> StatusView:
    """Run the checks (unless a report is given) and read the catalog."""
    from pgvault.catalog import open_catalog

    report = report or run_checks(settings)
    now = report.checked_at
    view = StatusView(settings.cluster, iso(now), report.status, days=days)
    _queues(view, report.results)
    _lag(view, report.results)
    view.failing = [r for r in report.results if r.status is not Status.OK]
    try:
        catalog = open_catalog(settings, create=False)
    except PgvaultError as exc:
        view.catalog_error = str(exc)
        return view
    try:
        _catalog_part(view, catalog, now)
    except PgvaultError as exc:
        view.catalog_error = str(exc)
    finally:
        catalog.close()
    return view
