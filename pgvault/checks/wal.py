"""WAL checks: upload_lag (spool backlog and RPO) and wal_gaps.

upload_lag/spool  the oldest finished spool artifact the catalog does not show verified:
                  the pipeline (producer, upload, verify, catalog) is not keeping up.
                  A WAL file waiting longer than alerts.wal_lag_warning_minutes is a
                  WARNING, longer than alerts.wal_lag_critical_minutes CRITICAL; any
                  artifact waiting longer than alerts.max_upload_lag_minutes CRITICAL.
upload_lag/wal    RPO, by position. When PostgreSQL is reachable: the archived segments
                  (timeline, segment number) up to its last archived one that are not in
                  the verified chain are counted, and how long the first of them has
                  waited is held against the same WAL lag minutes; none unverified and
                  none waiting to be archived is OK whatever the age. Without
                  PostgreSQL: how long ago the newest verified segment reached the
                  spool, against 2 x postgres.archive_timeout.
wal_gaps          holes in the verified WAL chain inside the restorable window (from the
                  oldest verified base backup's start, or the whole chain without one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pgvault.catalog import queries
from pgvault.catalog.rows import ArtifactRow
from pgvault.catalog.wal import run_containing
from pgvault.checks.base import CheckContext, CheckResult, Status, fmt_seconds
from pgvault.spool.scan import finished_entries
from pgvault.timeutil import iso
from pgvault.walfile import DEFAULT_SEG_SIZE, parse_name, segment_name

WAL_KINDS = ("wal", "history")


def _lag_status(ctx: CheckContext, age_s: float) -> Status:
    """WAL upload lag: WARNING, then CRITICAL, past the configured minutes."""
    alerts = ctx.settings.alerts
    if 0 < alerts.wal_lag_critical_minutes * 60 < age_s:
        return Status.CRITICAL
    if 0 < alerts.wal_lag_warning_minutes * 60 < age_s:
        return Status.WARNING
    return Status.OK


def spool_lag(ctx: CheckContext) -> CheckResult:
    limit_s = ctx.settings.alerts.max_upload_lag_minutes * 60
    spool_dir = ctx.settings.spool_dir
    if not spool_dir.is_dir():
        return CheckResult(
            "upload_lag",
            "spool",
            Status.UNKNOWN,
            f"cannot evaluate: spool {spool_dir} does not exist",
            action="run `pgvault init`",
        )
    now = ctx.now.timestamp()
    cat = ctx.catalog()
    waiting: list[tuple[float, str, str]] = []
    for kind, name, path in finished_entries(spool_dir):
        row = queries.state_of(cat, kind, name)
        if row is not None and row.state == "verified":
            continue
        try:
            waiting.append((now - os.stat(path).st_mtime, f"{kind}/{name}", kind))
        except FileNotFoundError:  # removed meanwhile
            continue
    if not waiting:
        return CheckResult(
            "upload_lag",
            "spool",
            Status.OK,
            "every spool artifact is verified in the store",
            value=0.0,
            threshold=limit_s or None,
            unit="s",
            details={"unverified": 0},
        )
    age, oldest = max((a, n) for a, n, _k in waiting)
    wal_ages = [a for a, _n, k in waiting if k in WAL_KINDS]
    wal_age = max(wal_ages, default=0.0)
    late = 0 < limit_s < age
    status = Status.CRITICAL if late else _lag_status(ctx, wal_age)
    text = (
        f"{len(waiting)} spool artifact(s) not verified remotely yet, oldest {oldest} "
        f"waiting {fmt_seconds(age)}"
    )
    if late:
        text += f", more than {fmt_seconds(limit_s)}"
    elif status is not Status.OK:
        text += f"; WAL waiting up to {fmt_seconds(wal_age)}: commits exist only on this host"
    return CheckResult(
        "upload_lag",
        "spool",
        status,
        text,
        value=round(age, 1),
        threshold=limit_s or None,
        unit="s",
        action="check that producer, upload, verify and catalog workers run (`queues` check, "
        "their logs) and that the store is reachable (`store` check)"
        if status is not Status.OK
        else None,
        details={"unverified": len(waiting), "oldest": oldest, "unverified_wal": len(wal_ages)},
    )


def newest_verified_segment(ctx: CheckContext) -> ArtifactRow | None:
    """The end of the newest timeline's verified chain (via wal_runs, index only)."""
    return queries.newest_verified_segment(ctx.catalog())


def _rpo(ctx: CheckContext) -> CheckResult:
    timeout = ctx.settings.postgres.archive_timeout
    limit_s = 2.0 * timeout
    action = (
        "check the archiver (`archiver` check, pg_stat_archiver), then the pipeline workers "
        "(`queues`, `upload_lag/spool`)"
    )
    newest = newest_verified_segment(ctx)
    if newest is None:
        return CheckResult(
            "upload_lag",
            "wal",
            Status.WARNING,
            "no verified WAL segment in the catalog yet",
            threshold=limit_s or None,
            unit="s",
            action=action,
        )
    age = ctx.age_s(newest.created_at) or 0.0
    details: dict[str, Any] = {"newest_verified": newest.name}
    facts = ctx.pg_or_none()
    caught_up = False
    if facts is not None and facts.last_archived_wal and len(facts.last_archived_wal) == 24:
        details["last_archived_wal"] = facts.last_archived_wal
        behind = archived_unverified(ctx, facts.last_archived_wal, facts.seg_size)
        details["unverified_archived"] = behind.count
        if behind.count:
            result = _behind(ctx, behind, details, facts.last_archived_time)
            if 0 < limit_s < age and result.status is not Status.CRITICAL:
                # the old bound still holds: nothing verified for 2 x archive_timeout
                result = replace(
                    result,
                    status=Status.CRITICAL,
                    message=f"{result.message}; newest verified WAL segment {newest.name} "
                    f"arrived {fmt_seconds(age)} ago, more than 2 x archive_timeout "
                    f"({fmt_seconds(limit_s)})",
                    action=action,
                )
            return result
        caught_up = not facts.pending_segments
    if timeout <= 0 or caught_up or age <= limit_s:
        if caught_up:
            why = "; every segment PostgreSQL archived is verified"
        elif timeout <= 0:
            why = " (not compared: postgres.archive_timeout is 0)"
        else:
            why = ""
        return CheckResult(
            "upload_lag",
            "wal",
            Status.OK,
            f"newest verified WAL segment {newest.name} arrived {fmt_seconds(age)} ago{why}",
            value=round(age, 1),
            threshold=limit_s or None,
            unit="s",
            details=details,
        )
    return CheckResult(
        "upload_lag",
        "wal",
        Status.CRITICAL,
        f"newest verified WAL segment {newest.name} arrived {fmt_seconds(age)} ago, more "
        f"than 2 x archive_timeout ({fmt_seconds(limit_s)}): recent commits exist only on "
        "this host",
        value=round(age, 1),
        threshold=limit_s,
        unit="s",
        action=action,
        details=details,
    )


@dataclass(frozen=True)
class Behind:
    """Archived segments up to PostgreSQL's last archived one not in the verified chain."""

    count: int
    first: str | None = None  # the oldest of them
    arrived_at: str | None = None  # when it reached the spool/catalog, if known


def archived_unverified(ctx: CheckContext, last_archived: str, seg_size: int) -> Behind:
    """Compare by position (timeline, segment number), never by name: a stray verified
    row ahead of the chain proves nothing about the segments before it."""
    wal = parse_name(last_archived)
    seg_size = seg_size or DEFAULT_SEG_SIZE
    tli, segno = wal.timeline, wal.segno(seg_size)
    cat = ctx.catalog()
    if run_containing(cat.conn, tli, segno):
        return Behind(0)
    below = queries.verified_end_below(cat, tli, segno)
    if below is not None:
        first = below + 1
    else:  # nothing verified before it on this timeline: from its first catalogued segment
        known = queries.first_wal_segno(cat, tli, segno)
        first = known if known is not None else segno
    name = segment_name(tli, first, seg_size)
    arrived = queries.wal_created_at(cat, name)
    if arrived is None:
        try:
            mtime = os.stat(ctx.settings.spool_dir / "wal" / name).st_mtime
            arrived = iso(datetime.fromtimestamp(mtime, UTC))
        except OSError:
            arrived = None
    return Behind(segno - first + 1, name, arrived)


def _behind(
    ctx: CheckContext, behind: Behind, details: dict[str, Any], archived_at: datetime | None
) -> CheckResult:
    since = behind.arrived_at or (iso(archived_at) if archived_at else None)
    lag = max(0.0, ctx.age_s(since) or 0.0)
    status = _lag_status(ctx, lag)
    warn_s = ctx.settings.alerts.wal_lag_warning_minutes * 60
    details.update(first_unverified=behind.first, waiting_since=since)
    text = (
        f"{behind.count} archived WAL segment(s) not verified in the store, from "
        f"{behind.first}, waiting {fmt_seconds(lag)}"
    )
    if status is not Status.OK:
        text += ": recent commits exist only on this host"
    return CheckResult(
        "upload_lag",
        "wal",
        status,
        text,
        value=round(lag, 1),
        threshold=warn_s or None,
        unit="s",
        action=None
        if status is Status.OK
        else "check the pipeline workers (`queues`, `upload_lag/spool`) and the store "
        "(`store` check); `pgvault catalog gaps` lists what is not verified",
        details=details,
    )


def upload_lag(ctx: CheckContext) -> list[CheckResult]:
    return [spool_lag(ctx), _rpo(ctx)]


def _window_start(ctx: CheckContext) -> tuple[int, int] | None:
    """(timeline, segno) where the oldest verified base backup starts, if known."""
    oldest = queries.oldest_verified_backup(ctx.catalog())
    if oldest is None:
        return None
    seg_size = int(oldest.seg_size or 16 * 1024 * 1024)
    return int(oldest.timeline or 0), int(oldest.start_lsn or 0) // seg_size


def wal_gaps(ctx: CheckContext) -> list[CheckResult]:
    from pgvault.catalog.wal import chains

    window = _window_start(ctx)
    found: list[dict[str, Any]] = []
    for ch in chains(ctx.catalog().conn):
        if window is not None and ch.timeline < window[0]:
            continue
        for hole in ch.gaps:
            if window is not None and ch.timeline == window[0] and hole.last_segno < window[1]:
                continue
            found.append(
                {
                    "timeline": ch.timeline,
                    "first": ch.name(hole.first_segno),
                    "last": ch.name(hole.last_segno),
                    "count": hole.count,
                    "names": hole.names,
                }
            )
    missing = sum(g["count"] for g in found)
    if not found:
        return [
            CheckResult(
                "wal_gaps",
                "wal",
                Status.OK,
                "the verified WAL chain has no gap in the restorable window",
                value=0,
                threshold=0,
                unit="segments",
            )
        ]
    listed = ", ".join(f"{g['first']}..{g['last']}" for g in found[:3])
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    return [
        CheckResult(
            "wal_gaps",
            "wal",
            Status.CRITICAL,
            f"{len(found)} gap(s) in the WAL chain, {missing} segment(s) not verified: "
            f"{listed}{more}; point-in-time recovery cannot cross them",
            value=missing,
            threshold=0,
            unit="segments",
            action="`pgvault catalog gaps` lists them; if pg_wal or the spool still has them, "
            "`pgvault producer --once` re-announces them; otherwise take a new base backup now",
            details={"gaps": found},
        )
    ]
