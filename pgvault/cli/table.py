"""`restore table`, `restore database`, `drill table`: one table or one database as it
was at time T, through a private scratch cluster (issue 20)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pgvault.cli.output import emit_json, human_bytes

if TYPE_CHECKING:
    from datetime import datetime

    from pgvault.restore.table import TableRestoreRequest, TableRestoreResult

AT_HELP = "Point in time, ISO 8601 (no zone = UTC); must be restorable (catalog restorable)."
SCRATCH_HELP = "Where the private scratch cluster goes (default: the system temp directory)."
OWNER_HELP = "OS user that owns and runs the scratch cluster (when pgvault runs as root)."


def parse_at(at: str, json_out: bool) -> datetime:
    """--at as a UTC time (a UsageError if it does not parse); notes a zone-less one on stderr."""
    from pgvault.errors import UsageError
    from pgvault.ids import parse_time, utc_note

    try:
        when = parse_time(at)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    note = utc_note(at)
    if note and not json_out:
        typer.echo(note, err=True)
    return when


def _run(ctx: typer.Context, req: TableRestoreRequest, json_out: bool) -> None:
    from pgvault.cli import state
    from pgvault.cli.rebuild import catalog_for_restore
    from pgvault.keys import identities_for
    from pgvault.restore.table import restore_at
    from pgvault.storage import open_store

    settings = state(ctx).settings
    catalog = catalog_for_restore(settings)
    result = restore_at(
        settings, catalog, open_store(settings.storage), req, identities=identities_for(settings)
    )
    if json_out:
        emit_json({"cluster": settings.cluster, **result.as_dict()})
    else:
        print_result(result)
    if not result.ok:
        raise typer.Exit(1)


def print_result(r: TableRestoreResult) -> None:
    what = ", ".join(f"{t['schema']}.{t['name']}" for t in r.tables) if r.mode == "tables" else r.db
    where = r.target_db + (f" as {r.target_table}" if r.target_table else "")
    typer.echo(
        f"restored {what} as of {r.target} into {where}: base backup {r.backup_id}, "
        f"last replayed commit {r.restored_to or '(none since the backup)'}"
    )
    for t in r.tables:
        typer.echo(f"  {t['schema']}.{t['name']}: {t['rows_at_target']} rows at T")
    zeroed = r.layout.get("databases_zero_filled") or []
    typer.echo(
        f"fetched {human_bytes(r.bytes_fetched)}; extracted {human_bytes(r.bytes_extracted)} "
        f"of the backup's {human_bytes(r.data_size)}"
        + (f" (not extracted: {', '.join(zeroed)})" if zeroed else "")
    )
    if not r.layout.get("databases_known", True):
        typer.echo("the base backup predates its database list: every database was extracted")
    phases = ("plan", "fetch", "extract", "replay", "dump", "load", "total")
    typer.echo(
        "time: "
        + ", ".join(f"{p} {r.timings[p + '_s']:.1f}s" for p in phases if p + "_s" in r.timings)
    )
    typer.echo("scratch cluster removed")
    if r.error:
        typer.echo(f"FAILED: {r.error}", err=True)


def restore_table(
    ctx: typer.Context,
    db: str = typer.Option(..., "--db", help="Database the table belongs to."),
    table: list[str] = typer.Option(
        ..., "--table", help="SCHEMA.TABLE to restore (repeatable; brings its partitions)."
    ),
    at: str = typer.Option(..., "--at", help=AT_HELP),
    target_db: str = typer.Option(..., "--target-db", help="Database to restore into."),
    target_table: str | None = typer.Option(
        None,
        "--target-table",
        help="Restore the rows into this new table (same schema) beside the original.",
    ),
    clean: bool = typer.Option(
        False, "--clean", help="Replace the table(s) if they exist in the target (in place)."
    ),
    force_in_place: bool = typer.Option(
        False, "--force-in-place", help="Same as --clean when --target-db is the source."
    ),
    owner: str = typer.Option("postgres", "--owner", help=OWNER_HELP),
    scratch: Path | None = typer.Option(None, "--scratch-dir", help=SCRATCH_HELP),
    json_out: bool = typer.Option(False, "--json", help="Result as JSON."),
) -> None:
    """Restore tables as they were at --at, without restoring the cluster over production.

    The catalog plans exactly as for `restore pitr`; the base backup is restored into a
    private scratch cluster (no TCP listener, archiving off, removed afterwards) with
    only global/, the templates and this database's files extracted, WAL replayed to
    T, the tables dumped with pg_dump and restored like `restore logical --table`
    (partition trees, large objects, foreign keys pointing at them, one transaction).
    In place needs --clean; --target-table puts the rows in a new table instead.
    """
    from pgvault.restore.table import TableRestoreRequest

    req = TableRestoreRequest(
        db=db,
        at=parse_at(at, json_out),
        target_db=target_db,
        tables=tuple(table),
        target_table=target_table,
        clean=clean,
        force_in_place=force_in_place,
        owner=owner,
        scratch_parent=scratch,
    )
    _run(ctx, req, json_out)


def restore_database(
    ctx: typer.Context,
    db: str = typer.Option(..., "--db", help="Database to restore."),
    at: str = typer.Option(..., "--at", help=AT_HELP),
    target_db: str = typer.Option(..., "--target-db", help="New database to restore into."),
    owner: str = typer.Option("postgres", "--owner", help=OWNER_HELP),
    scratch: Path | None = typer.Option(None, "--scratch-dir", help=SCRATCH_HELP),
    json_out: bool = typer.Option(False, "--json", help="Result as JSON."),
) -> None:
    """Restore one database as it was at --at into a new database, beside production.

    Same scratch cluster as `restore table` (the other databases' files are never
    extracted); the database is dumped from it and restored like `restore logical`
    (staging database, row counts checked, then renamed). An existing --target-db is
    refused.
    """
    from pgvault.restore.table import TableRestoreRequest

    req = TableRestoreRequest(
        db=db, at=parse_at(at, json_out), target_db=target_db, owner=owner, scratch_parent=scratch
    )
    _run(ctx, req, json_out)


def drill_table(
    ctx: typer.Context,
    db: str = typer.Option(..., "--db", help="Database whose table is drilled."),
    table: str | None = typer.Option(
        None, "--table", help="SCHEMA.TABLE (default: one picked at random at T)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (time and table)."),
    owner: str = typer.Option("postgres", "--owner", help=OWNER_HELP),
    scratch: Path | None = typer.Option(None, "--scratch-dir", help=SCRATCH_HELP),
    json_out: bool = typer.Option(False, "--json", help="Result as JSON."),
) -> None:
    """Restore a table to a random time from the STORE into a scratch database, compare.

    The restored rows are compared (row digests) with the scratch cluster's state at T;
    the drill and its measured time are recorded in the catalog, the scratch database
    and cluster removed; exit 1 when the drill failed.
    """
    from pgvault.broker import open_broker
    from pgvault.catalog import open_catalog
    from pgvault.cli import state
    from pgvault.keys import identities_for
    from pgvault.restore.drill_table import drill_table as run
    from pgvault.storage import open_store

    settings = state(ctx).settings
    out = run(
        settings,
        open_catalog(settings),
        open_store(settings.storage),
        open_broker(settings),
        db=db,
        table=table,
        seed=seed,
        owner=owner,
        scratch=scratch,
        identities=identities_for(settings),
    )
    data: dict[str, Any] = {"cluster": settings.cluster, **out}
    if json_out:
        emit_json(data)
    else:
        verdict = "ok" if out["ok"] else "FAILED"
        typer.echo(
            f"table drill {verdict}: {out.get('table')} at {out.get('target')}, "
            f"{out.get('duration_s', 0):.1f}s" + ("" if out["ok"] else f": {out.get('error')}")
        )
    if not out["ok"]:
        raise typer.Exit(1)


def register(restore_app: typer.Typer, drill_app: typer.Typer) -> None:
    restore_app.command("table")(restore_table)
    restore_app.command("database")(restore_database)
    drill_app.command("table")(drill_table)
