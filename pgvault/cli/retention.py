"""`pgvault retention apply [--dry-run]`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from pgvault.cli.output import emit_json, human_bytes
from pgvault.errors import UsageError

if TYPE_CHECKING:
    from pgvault.catalog.db import CatalogDB
    from pgvault.config import Settings
    from pgvault.retention.apply import ApplyReport
    from pgvault.retention.policy import RetentionPlan

app = typer.Typer(no_args_is_help=True, help="Retention: delete what no policy needs.")


@app.command("apply")
def apply_cmd(
    ctx: typer.Context,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print what would be removed and why everything else is kept; delete nothing.",
    ),
    now: str | None = typer.Option(
        None,
        "--now",
        help="Evaluate the policy as of this time (ISO 8601; for trying policies out).",
    ),
    json_out: bool = typer.Option(False, "--json", help="The plan (and result) as JSON."),
) -> None:
    """Apply [retention]: remove expired dumps, base backups and the WAL nothing needs.

    Never removes the newest verified dump of a database, the newest verified base
    backup, the WAL a retained backup or the wal_days window needs, anything not verified
    yet, or anything a running restore/drill holds. Deletion is crash-safe (expiring ->
    deleted from the store and the spool -> deleted) and a rerun finishes half-done work.
    Also removes spool copies verified more than local_keep_days ago.
    Exit 1 when some deletion failed (it is retried by the next run; an alert is raised).
    """
    from pgvault.catalog import open_catalog
    from pgvault.cli import state
    from pgvault.ids import parse_time
    from pgvault.retention.policy import plan, summary

    settings = state(ctx).settings
    try:
        moment = parse_time(now) if now else datetime.now(UTC)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    catalog = open_catalog(settings, create=False)
    retention = plan(catalog, settings.retention, moment)
    data = summary(retention)
    failed = False
    if not dry_run:
        report, spool = _apply(settings, catalog, retention)
        failed = bool(report.failed)
        data["result"] = {
            "deleted": report.deleted,
            "failed": report.failed,
            "bytes_freed": report.bytes_freed,
            "spool_removed": spool,
        }
    if json_out:
        emit_json(data | {"dry_run": dry_run, "cluster": settings.cluster, "ok": not failed})
    else:
        _print(data, dry_run)
    if failed:
        raise typer.Exit(1)


def _apply(
    settings: Settings, catalog: CatalogDB, retention: RetentionPlan
) -> tuple[ApplyReport, list[str]]:
    from pgvault.alerting import raise_alert
    from pgvault.broker import open_broker
    from pgvault.retention.apply import apply
    from pgvault.spool.janitor import clean_spool
    from pgvault.storage import open_store

    report = apply(catalog, open_store(settings.storage), settings.spool_dir, retention)
    spool = clean_spool(settings, catalog)
    if report.failed:
        raise_alert(
            settings,
            open_broker(settings),
            severity="warning",
            check="retention_failed",
            subject="store",
            summary=f"retention could not delete {len(report.failed)} "
            f"item(s) (e.g. {report.failed[0]}); they stay marked expiring and the next "
            "run retries",
            action="check the store's credentials and reachability",
        )
    return report, spool


def _print(data: dict[str, Any], dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    typer.echo(
        f"retention as of {data['now']}; point-in-time window anchored at base backup "
        f"{data['anchor'] or '(none: all WAL kept)'}"
    )
    artifacts = dict(data["artifacts"])
    wal = data["wal_segments"]
    kinds = sorted(set(artifacts) | {"wal"})
    for kind in kinds:
        groups = artifacts.get(kind, {"remove": [], "keep": []})
        gone, kept = len(groups["remove"]), len(groups["keep"])
        if kind == "wal":  # segments by range, plus history/.backup/.partial files
            seg_gone = sum(int(r["segments"]) for r in wal["remove"])
            seg_kept = sum(int(r["segments"]) for r in wal["keep"])
            typer.echo(
                f"wal: {verb} {seg_gone} segment(s) and {gone} other file(s), "
                f"keep {seg_kept} segment(s) and {kept} other file(s)"
            )
            for sign, items in (("-", wal["remove"]), ("+", wal["keep"])):
                for r in items:
                    typer.echo(
                        f"  {sign} {r['first']} .. {r['last']} ({r['segments']} segments): "
                        f"{r['reason']}"
                    )
        else:
            typer.echo(f"{kind}: {verb} {gone}, keep {kept}")
        for item in groups["remove"]:
            typer.echo(f"  - {item['name']}: {'; '.join(item['reasons'])}")
        for item in groups["keep"]:
            typer.echo(f"  + {item['name']}: {'; '.join(item['reasons'])}")
    for item in data.get("skipped", []):
        typer.echo(
            f"SKIPPED {item['kind']} row {item['name']!r}: {item['problem']} (kept; inspect "
            "the catalog)"
        )
    if data["resume"]:
        typer.echo(f"finishing {len(data['resume'])} deletion(s) a previous run left half-done")
    if "result" in data:
        res = data["result"]
        done = ", ".join(f"{n} {k}" for k, n in sorted(res["deleted"].items())) or "nothing"
        typer.echo(
            f"deleted: {done}; {human_bytes(res['bytes_freed'])} freed in the store; "
            f"{len(res['spool_removed'])} spool copies removed"
        )
        if res["failed"]:
            typer.echo(f"FAILED to delete {len(res['failed'])}: {', '.join(res['failed'][:10])}")
