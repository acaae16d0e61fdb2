"""The `drills` check: restores are proven by drills, so drills must run and pass.

Per drill kind (`logical`, `pitr`): CRITICAL when the latest drill of any target within
alerts.max_drill_age_days failed; WARNING when the newest drill is older than that, or
there never was one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pgvault.checks.base import CheckContext, CheckResult, Status, fmt_seconds

if TYPE_CHECKING:
    from pgvault.catalog.rows import DrillRow

KINDS = ("logical", "pitr")


def _why(row: DrillRow) -> str:
    details = row.details or {}
    if isinstance(details, dict):
        for key in ("error", "reason", "mismatches"):
            if details.get(key):
                text = details[key]
                text = text if isinstance(text, str) else json.dumps(text, default=str)
                return " ".join(text.split())[:200]
    return "see the drill log"


def drills(ctx: CheckContext) -> list[CheckResult]:
    from pgvault.catalog.runs import last_drills

    max_s = ctx.settings.alerts.max_drill_age_days * 86400
    rows = last_drills(ctx.catalog())
    results = []
    for kind in KINDS:
        action = f"run `pgvault drill {kind}` (and check its timer); read its report"
        if max_s <= 0:
            results.append(CheckResult("drills", kind, Status.OK, "check disabled (threshold 0)"))
            continue
        mine = [r for r in rows if r.kind == kind]
        if not mine:
            results.append(
                CheckResult(
                    "drills",
                    kind,
                    Status.WARNING,
                    f"no {kind} restore drill recorded: restores are unproven",
                    threshold=max_s,
                    unit="s",
                    action=action,
                )
            )
            continue
        newest = max(mine, key=lambda r: str(r.started_at))
        age = ctx.age_s(newest.finished_at or newest.started_at) or 0.0
        failed = [
            r
            for r in mine
            if r.result != "ok" and (ctx.age_s(r.finished_at or r.started_at) or 0.0) <= max_s
        ]
        details = {
            "target": newest.target,
            "backup": newest.backup,
            "finished_at": newest.finished_at,
            "duration_s": newest.duration_s,
            "result": newest.result,
        }
        if failed:
            bad = failed[0]
            status = Status.CRITICAL
            text = (
                f"{kind} drill of {bad.target} (backup {bad.backup}) at "
                f"{str(bad.started_at)[:19]} failed: {_why(bad)}"
            )
        elif age > max_s:
            status = Status.WARNING
            text = f"last {kind} drill ran {fmt_seconds(age)} ago, more than {fmt_seconds(max_s)}"
        else:
            status = Status.OK
            rto = fmt_seconds(float(newest.duration_s or 0))
            text = f"last {kind} drill of {newest.target} passed {fmt_seconds(age)} ago in {rto}"
        results.append(
            CheckResult(
                "drills",
                kind,
                status,
                text,
                value=round(age, 1),
                threshold=max_s,
                unit="s",
                action=None if status is Status.OK else action,
                details=details,
            )
        )
    return results
