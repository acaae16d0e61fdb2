"""The `archiver` check: is PostgreSQL handing its WAL to pgvault?

CRITICAL  archive_mode off, no archive_command, the latest archive attempt failed
          (pg_stat_archiver: last_failed_time after last_archived_time), or more than
          alerts.max_archive_pending completed segments wait (a hung archive_command does
          not fail, it just stops: the backlog shows it), or at least 2 wait and nothing
          was archived for 2 x archive_timeout.
WARNING   failed_count rose since the previous check but archiving has recovered; the
          server's archive_timeout is 0 or longer than postgres.archive_timeout.
UNKNOWN   PostgreSQL unreachable.

The previous failed_count (and stats_reset, so a counter reset is not a "drop") is kept
in the catalog's `settings` table under `monitor.archiver`: the only state `check` keeps.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pgvault.catalog.settings import get_setting, put_setting
from pgvault.checks.base import CheckContext, CheckResult, Status, fmt_seconds, unknown, worst
from pgvault.checks.pgfacts import PgFacts
from pgvault.errors import PgvaultError

log = logging.getLogger(__name__)
STATE_KEY = "monitor.archiver"


def _previous(ctx: CheckContext) -> dict[str, Any] | None:
    try:
        value = get_setting(ctx.catalog(), STATE_KEY)
    except (PgvaultError, OSError, ValueError):
        return None
    try:
        data = json.loads(value) if value else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _remember(ctx: CheckContext, facts: PgFacts) -> None:
    stamp = facts.stats_reset.isoformat() if facts.stats_reset else None
    record = json.dumps({"failed_count": facts.failed_count, "stats_reset": stamp})
    try:
        put_setting(ctx.catalog(), STATE_KEY, record)
    except Exception as exc:  # a read-only catalog must not break the check
        log.warning("could not remember archiver counters: %s", exc)


def _rise(ctx: CheckContext, facts: PgFacts) -> int:
    prev = _previous(ctx)
    if prev is None:
        return 0
    stamp = facts.stats_reset.isoformat() if facts.stats_reset else None
    if prev.get("stats_reset") != stamp:
        return facts.failed_count  # counters were reset since: all of these are new
    return max(0, facts.failed_count - int(prev.get("failed_count") or 0))


def _problems(ctx: CheckContext, facts: PgFacts, rise: int) -> list[tuple[Status, str]]:
    out: list[tuple[Status, str]] = []
    if facts.archive_mode not in ("on", "always"):
        out.append((Status.CRITICAL, f"archive_mode is {facts.archive_mode or 'unset'}"))
    if facts.wal_level not in ("replica", "logical"):
        out.append((Status.CRITICAL, f"wal_level is {facts.wal_level}, archiving needs replica"))
    if facts.archive_command_set is False:
        out.append((Status.CRITICAL, "archive_command is empty: WAL piles up in pg_wal"))
    if facts.failing:
        when = facts.last_failed_time.isoformat() if facts.last_failed_time else "?"
        out.append(
            (
                Status.CRITICAL,
                f"archive_command failing: last failed WAL {facts.last_failed_wal} at {when}"
                + (f" ({rise} failure(s) since the last check)" if rise else ""),
            )
        )
    elif rise:
        out.append(
            (
                Status.WARNING,
                f"{rise} archive failure(s) since the last check (last failed WAL "
                f"{facts.last_failed_wal}); archiving has recovered",
            )
        )
    pending = facts.pending_segments
    limit = ctx.settings.alerts.max_archive_pending
    stale_s = 2.0 * max(facts.archive_timeout, ctx.settings.postgres.archive_timeout, 60)
    idle_s = (
        (ctx.now - facts.last_archived_time).total_seconds() if facts.last_archived_time else None
    )
    if pending is not None and pending > limit:
        out.append((Status.CRITICAL, f"{pending} completed segments wait to be archived"))
    elif pending is not None and pending >= 2 and idle_s is not None and idle_s > stale_s:
        out.append(
            (
                Status.CRITICAL,
                f"{pending} completed segments wait and nothing was archived for "
                f"{fmt_seconds(idle_s)}: archive_command hangs?",
            )
        )
    expected = ctx.settings.postgres.archive_timeout
    too_long = facts.archive_timeout == 0 or facts.archive_timeout > expected
    if expected > 0 and not facts.in_recovery and too_long:
        out.append(
            (
                Status.WARNING,
                f"server archive_timeout is {facts.archive_timeout} s, expected at most "
                f"{expected} s (the RPO bound)",
            )
        )
    return out


def archiver(ctx: CheckContext) -> list[CheckResult]:
    try:
        facts = ctx.pg()
    except PgvaultError as exc:
        return [
            unknown(
                "archiver",
                "postgres",
                str(exc),
                "start PostgreSQL or fix [postgres] host/port/user and its .pgpass",
            )
        ]
    rise = _rise(ctx, facts)
    _remember(ctx, facts)
    problems = _problems(ctx, facts, rise)
    details = {
        "archive_mode": facts.archive_mode,
        "wal_level": facts.wal_level,
        "archive_timeout": facts.archive_timeout,
        "archived_count": facts.archived_count,
        "last_archived_wal": facts.last_archived_wal,
        "failed_count": facts.failed_count,
        "failed_since_last_check": rise,
        "last_failed_wal": facts.last_failed_wal,
        "pending_segments": facts.pending_segments,
    }
    if not problems:
        last = facts.last_archived_wal or "nothing yet"
        return [
            CheckResult(
                "archiver",
                "postgres",
                Status.OK,
                f"archiving works: last archived {last}, {facts.failed_count} failure(s) in "
                f"total, {facts.pending_segments or 0} segment(s) waiting",
                value=rise,
                threshold=0,
                unit="failures",
                details=details,
            )
        ]
    return [
        CheckResult(
            "archiver",
            "postgres",
            worst([s for s, _ in problems]),
            "; ".join(text for _, text in problems),
            value=rise,
            threshold=0,
            unit="failures",
            action="see the PostgreSQL log for the archive_command error (run it by hand as "
            "postgres: `pgvault wal-archive pg_wal/NAME NAME`); fix postgresql.conf settings",
            details=details,
        )
    ]
