"""`backup logical`, `restore logical`, `drill logical`."""

from __future__ import annotations

from typing import Any

import typer

from pgvault.cli.output import emit_json, table

DB_HELP = "Database to back up (repeatable; default: every one in postgres.databases)."


def _databases(ctx: typer.Context, given: list[str]) -> list[str]:
    from pgvault.cli import state
    from pgvault.errors import UsageError

    dbs = list(dict.fromkeys(given or state(ctx).settings.postgres.databases))
    if not dbs:
        raise UsageError("no database given: pass --db NAME or set postgres.databases")
    return dbs


def _err(text: str) -> None:
    typer.echo(f"pgvault: error: {text}", err=True)


def backup_logical(
    ctx: typer.Context,
    db: list[str] = typer.Option([], "--db", help=DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
) -> None:
    """Dump databases with pg_dump (custom format) into the spool, with a manifest.

    Each dump runs inside an exported snapshot whose exact row counts go into
    manifest.json; the archive is read back (every data block in place and complete),
    fsynced, and the manifest written last before the backup directory is renamed into
    spool_dir/logical/<db>/ (<db> percent-encoded outside [A-Za-z0-9_.-] and for a
    leading dot). The producer then announces it to the upload, verify and catalog
    workers. One database failing does not stop the others: each failure is one error
    line and a `backup_failed` alert, and the exit code is 1.
    """
    from pgvault.cli import state
    from pgvault.producers.logical_cmd import backup_databases

    # the plain forms of this command line skip typer (pgvault.__main__): same function
    code = backup_databases(state(ctx).settings, db, json_out)
    if code:
        raise typer.Exit(code)


def _print_restore(report: Any) -> None:
    what = "tables replaced" if report.mode == "tables" else "replacing the old one"
    typer.echo(
        f"restored {report.backup} (dump finished {report.dump_finished_at}, fetched from the "
        f"{report.fetched_from}) into {report.target_db}"
        + (f" ({what})" if report.replaced else "")
    )
    rows = [
        (
            f"{t.schema}.{t.name}",
            t.expected,
            t.restored,
            "" if t.tree_expected is None else f"{t.tree_restored}/{t.tree_expected}",
            "ok" if t.ok else "MISMATCH",
        )
        for t in report.tables
    ]
    table(None, ["table", "manifest rows", "restored rows", "through parent", "check"], rows)
    for item in report.skipped:
        typer.echo(f"not restored: {item}")
    for item in report.database_differences:
        typer.echo(f"database property differs: {item}")
    lo = report.large_objects
    if lo is not None and lo.referenced:
        typer.echo(
            f"large objects referenced: {lo.referenced} ({lo.present} present, {lo.restored} "
            f"restored from the dump, {lo.missing} MISSING)"
        )
    timings = ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in report.timings.items())
    typer.echo(
        f"{len(report.tables)} table(s) checked, {len(report.mismatches)} mismatch(es); {timings}"
    )


def restore_logical(
    ctx: typer.Context,
    *,
    db: str = typer.Option(..., "--db", help="Source database whose dump is restored."),
    target_db: str = typer.Option(
        ..., "--target-db", help="Database to restore into (created; see --clean)."
    ),
    at: str | None = typer.Option(
        None,
        "--at",
        help="Use the newest verified dump finished at or before this time (ISO 8601; "
        "no zone = UTC). Default: the newest.",
    ),
    backup: str | None = typer.Option(
        None, "--backup", help="Use this dump (backup id, e.g. 20261124T000000Z)."
    ),
    tables: list[str] = typer.Option(
        [],
        "--table",
        help="Restore only this table (repeatable; 'schema.name' or a unique 'name'): its "
        "definition, data, indexes, constraints and the foreign keys pointing at it are "
        "replaced in the target in one transaction.",
    ),
    jobs: int = typer.Option(2, "--jobs", min=1, help="pg_restore --jobs (whole database)."),
    clean: bool = typer.Option(
        False,
        "--clean",
        help="Replace an existing --target-db (dropped only after the restore into a staging "
        "database succeeded and its row counts matched).",
    ),
    force_in_place: bool = typer.Option(
        False, "--force-in-place", help="Allow --target-db to be the source database itself."
    ),
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
) -> None:
    """Restore a verified dump into a database and compare row counts with its manifest.

    The dump (from the spool when present, else the store) is proven by sha256 before
    any database is touched. A whole-database restore goes through a staging database
    that replaces the target only when it is complete and its row counts match. Exit 1
    when a count differs, 2 for bad arguments.
    """
    from pgvault.cli import state
    from pgvault.cli.rebuild import catalog_for_restore
    from pgvault.errors import UsageError
    from pgvault.ids import parse_time
    from pgvault.restore.logical import RestoreRequest
    from pgvault.restore.logical import restore_logical as impl
    from pgvault.storage import open_store

    settings = state(ctx).settings
    try:
        when = parse_time(at) if at else None
    except ValueError as exc:
        raise UsageError(f"--at: {exc}") from None
    req = RestoreRequest(
        db=db,
        target_db=target_db,
        at=when,
        backup_id=backup,
        tables=tuple(tables),
        jobs=jobs,
        clean=clean,
        force_in_place=force_in_place,
    )
    catalog = catalog_for_restore(settings)
    try:
        report = impl(settings, req, catalog=catalog, store=open_store(settings.storage))
    finally:
        catalog.close()
    if json_out:
        emit_json({"cluster": settings.cluster, **report.as_json()})
    else:
        _print_restore(report)
    if not report.ok:
        _err(report.error or "row counts differ from the manifest")
        raise typer.Exit(1)


def drill_logical(
    ctx: typer.Context,
    db: list[str] = typer.Option(
        [], "--db", help="Database to drill (repeatable; default: all in postgres.databases)."
    ),
    jobs: int = typer.Option(2, "--jobs", min=1, help="pg_restore --jobs."),
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
) -> None:
    """Restore the newest verified dump of each database from the STORE into a scratch
    database <db>_verify_<date>, compare every table's row count with the manifest, run
    pg_amcheck when available, record the drill (duration = measured RTO) and drop the
    scratch database. A failure raises a `drill_failed` alert and exits 1.
    """
    from pgvault.broker import open_broker
    from pgvault.catalog import open_catalog
    from pgvault.cli import state
    from pgvault.restore.drill_logical import LogicalDrill
    from pgvault.storage import open_store

    settings = state(ctx).settings
    dbs = _databases(ctx, db)
    catalog = open_catalog(settings, create=False)
    broker = open_broker(settings)
    try:
        drill = LogicalDrill(
            settings,
            catalog=catalog,
            store=open_store(settings.storage),
            broker=broker,
            jobs=jobs,
        )
        outcomes = [drill.run(d) for d in dbs]
    finally:
        broker.close()
        catalog.close()
    for o in outcomes:
        if not o.ok:
            _err(f"drill of {o.db} failed: {o.error}")
    if json_out:
        emit_json(
            {
                "cluster": settings.cluster,
                "ok": all(o.ok for o in outcomes),
                "drills": [o.as_json() for o in outcomes],
            }
        )
    else:
        for o in outcomes:
            if o.ok:
                typer.echo(
                    f"{o.db}: ok  {o.backup} restored from the store and checked in "
                    f"{o.rto_s:.1f}s (RTO), {o.tables} tables, amcheck {o.amcheck}"
                )
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def register(backup_app: typer.Typer, restore_app: typer.Typer, drill_app: typer.Typer) -> None:
    """Add the logical commands to their groups."""
    backup_app.command("logical")(backup_logical)
    restore_app.command("logical")(restore_logical)
    drill_app.command("logical")(drill_logical)
