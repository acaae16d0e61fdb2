"""The `spool` check: nothing may sit in the spool unseen, and the service user must be
able to use it.

spool/unshipped  a finished spool entry older than `[service] max_unshipped_minutes`
                 (default 10) that the catalog does not show `stored` or `verified`: it was
                 never announced (producer down, entry unreadable) or never uploaded. A
                 backup that is not in the store within minutes is an alert, not an hour of
                 green. Entries the service user cannot read are counted here as well.
spool/access     spool, catalog, work dir and a local store written and read as the
                 service user (a probe process under its uid; see pgvault.identity).
"""

from __future__ import annotations

import os
import subprocess

from pgvault.catalog.queries import state_of
from pgvault.checks.base import CheckContext, CheckResult, Status, fmt_seconds
from pgvault.config import Settings
from pgvault.errors import PgvaultError
from pgvault.identity import is_service_user
from pgvault.spool.scan import finished_entries, unreadable_entries

SHIPPED = ("stored", "verified")


def unshipped(ctx: CheckContext) -> CheckResult:
    settings = ctx.settings
    limit_s = settings.service.max_unshipped_minutes * 60
    now = ctx.now.timestamp()
    cat = ctx.catalog()
    late: list[tuple[float, str, str]] = []
    for kind, name, path in finished_entries(settings.spool_dir):
        try:
            age = now - os.stat(path).st_mtime
        except FileNotFoundError:
            continue
        if not 0 < limit_s < age:
            continue
        row = state_of(cat, kind, name)
        if row is None:
            late.append((age, f"{kind}/{name}", "never announced"))
        elif row.state not in SHIPPED:
            late.append((age, f"{kind}/{name}", f"{row.state}, not uploaded"))
    unreadable = []
    if is_service_user(settings.service.user):
        unreadable = [
            str(p.relative_to(settings.spool_dir))
            for p, _ in unreadable_entries(settings.spool_dir)
        ]
    if not late and not unreadable:
        return CheckResult(
            "spool",
            "unshipped",
            Status.OK,
            "every spool entry older than "
            f"{fmt_seconds(limit_s) if limit_s else '(disabled)'} is in the store",
            value=0.0,
            threshold=limit_s or None,
            unit="s",
            details={"unshipped": 0, "unreadable": 0},
        )
    parts = []
    if late:
        age, oldest, why = max(late)
        parts.append(
            f"{len(late)} spool entr{'y' if len(late) == 1 else 'ies'} not in the store after "
            f"{fmt_seconds(limit_s)}, oldest {oldest} ({why}, {fmt_seconds(age)})"
        )
    if unreadable:
        parts.append(
            f"{len(unreadable)} unreadable by {settings.service.user}, e.g. {unreadable[0]}"
        )
    return CheckResult(
        "spool",
        "unshipped",
        Status.CRITICAL,
        "; ".join(parts),
        value=round(max(late)[0], 1) if late else None,
        threshold=limit_s or None,
        unit="s",
        action="is `pgvault producer` running? are the upload workers and the store up? "
        f"unreadable entries: chown -R {settings.service.user}: them",
        details={
            "unshipped": len(late),
            "unreadable": len(unreadable),
            "oldest": max(late)[1] if late else None,
        },
    )


def access_findings(settings: Settings, subject: str = "spool") -> list[CheckResult]:
    """`access`: can the service user write and read everything pgvault writes?"""
    from pgvault.identity import probe_as_service_user

    user = settings.service.user
    dirs = [settings.spool_dir / sub for sub in ("wal", "logical", "physical", "alerts", "tmp")]
    dirs.append(settings.catalog_path.parent)
    if settings.work_dir.exists():
        dirs.append(settings.work_dir)
    if settings.storage.type == "local":
        dirs.append(settings.storage.path)
    dirs = [d for d in dirs if d.exists()] or dirs
    files = [f for f in (settings.catalog_path, settings.hmac_key_path) if f.exists()]
    fix = f"sudo pgvault init (chowns them to {user}), or chown -R {user}: the path named"
    try:
        problem = probe_as_service_user(user, dirs, files)
    except PgvaultError as exc:
        return [CheckResult("spool", subject, Status.WARNING, str(exc), action=None)]
    except (OSError, subprocess.SubprocessError) as exc:
        return [CheckResult("spool", subject, Status.UNKNOWN, f"probe failed: {exc}", None)]
    if problem:
        return [CheckResult("spool", subject, Status.CRITICAL, f"as {user}: {problem}", action=fix)]
    where = "spool, catalog" + (", store" if settings.storage.type == "local" else "")
    return [
        CheckResult("spool", subject, Status.OK, f"{where} written and read as {user}", action=None)
    ]


def spool(ctx: CheckContext) -> list[CheckResult]:
    if not ctx.settings.spool_dir.is_dir():
        return [
            CheckResult(
                "spool",
                "unshipped",
                Status.UNKNOWN,
                f"spool {ctx.settings.spool_dir} does not exist",
                action="run `pgvault init`",
            )
        ]
    return [unshipped(ctx), *access_findings(ctx.settings, subject="access")]
