"""`pgvault status` for people: the verdict first, then one short section per topic."""

from __future__ import annotations

from pgvault.checks.base import fmt_bytes, fmt_seconds
from pgvault.status.model import StatusView


def _secs(value: float | None) -> str:
    return "?" if value is None else fmt_seconds(value)


def _size(value: int | None) -> str:
    return "?" if value is None else fmt_bytes(value)


def lines(view: StatusView) -> list[str]:
    """Plain lines; the first is the one-word verdict."""
    out = [view.verdict, f"cluster {view.cluster}, checked {view.checked_at}"]
    out += _pipeline(view)
    out += _backups(view)
    return out


def _pipeline(view: StatusView) -> list[str]:
    out = ["stages:"]
    if view.queues_error:
        out.append(f"  broker: {view.queues_error}")
    for q in view.queues:
        state = f"consumed by {q.consumers}" if q.consumed else "NOT consumed"
        out.append(f"  {q.stage:<9} {state} ({q.ready} ready, {q.retrying} in retry)")
    if view.catalog_error:
        out.append(f"catalog: {view.catalog_error}")
    out.append("restorable (point in time):")
    if not view.windows:
        out.append("  none: no verified base backup with a verified WAL chain")
    for start, end in view.windows:
        out.append(f"  {start} .. {end}")
    for g in view.gaps:
        where = f" between {g.after or '?'} and {g.before or '?'}"
        out.append(f"  GAP {g.first}..{g.last} ({g.count} segment(s)){where}")
    return out


def _backups(view: StatusView) -> list[str]:
    out = ["newest verified backups:"]
    if not view.backups:
        out.append("  none")
    for b in view.backups:
        what = "base backup" if b.kind == "physical" else f"dump of {b.db}"
        out.append(
            f"  {what}: {b.name}, {_secs(b.age_s)} ago, {_size(b.size)}, took {_secs(b.duration_s)}"
        )
    segs = "?" if view.wal_lag_segments is None else str(view.wal_lag_segments)
    spool = "?" if view.spool_unverified is None else str(view.spool_unverified)
    out.append(
        f"WAL lag: {_secs(view.wal_lag_s)} since the newest verified segment; {segs} "
        f"segment(s) archived but not verified; {spool} spool artifact(s) unverified"
    )
    out.append("last drills:")
    if not view.drills:
        out.append("  none recorded")
    for d in view.drills:
        out.append(
            f"  {d.kind} {d.target}: {d.result.upper()} at {d.finished_at} "
            f"(backup {d.backup}, {_secs(d.duration_s)})"
        )
    if view.failing:
        out.append("failing checks:")
        for r in view.failing:
            fix = f" -> {r.action}" if r.action else ""
            out.append(f"  {r.status.name:<8} {r.name} {r.subject}: {r.message}{fix}")
    else:
        out.append("failing checks: none")
    return out
