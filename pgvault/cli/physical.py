"""`backup physical`, `restore pitr`, `drill pitr`, `wal-restore`."""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pgvault.cli.output import emit_json, human_bytes
from pgvault.errors import UsageError

if TYPE_CHECKING:
    from pgvault.catalog.db import CatalogDB
    from pgvault.config import Settings


class TargetAction(StrEnum):
    promote = "promote"
    pause = "pause"
    shutdown = "shutdown"


def _deps(ctx: typer.Context, *, restoring: bool = False) -> tuple[Settings, CatalogDB]:
    from pgvault.catalog import open_catalog
    from pgvault.cli import state

    settings = state(ctx).settings
    if restoring:
        from pgvault.cli.rebuild import catalog_for_restore

        return settings, catalog_for_restore(settings)
    return settings, open_catalog(settings)


def backup_physical(
    ctx: typer.Context,
    incremental: bool = typer.Option(
        False,
        "--incremental",
        help="PostgreSQL 17+: pg_basebackup --incremental against the newest verified "
        "backup (needs summarize_wal = on; falls back to a full backup with a warning).",
    ),
    full: bool = typer.Option(
        False, "--full", help="A full backup whatever [physical] incremental says."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        min=1,
        max=64,
        help="zstd threads compressing the stream (default: [physical] max_workers).",
    ),
) -> None:
    """Take a base backup (pg_basebackup, tar, zstd, WAL included) into the spool.

    The backup is checked against PostgreSQL's backup_manifest (SHA-256 of every file,
    the WAL range present), written with manifest.json last, and renamed into
    spool_dir/physical/<backup_id>/; the producer announces it and the workers upload,
    verify and catalogue it. Needs a role with REPLICATION. On failure nothing is left
    in the spool, the run is recorded and an alert raised. Without --full/--incremental,
    `[physical] incremental` decides (default "never": full backups).
    """
    from pgvault.broker import open_broker
    from pgvault.producers import incremental as incr
    from pgvault.producers.physical import take_physical_backup
    from pgvault.storage import open_store

    settings, catalog = _deps(ctx)
    decision = incr.decide(settings, catalog, incr.requested_mode(settings, full, incremental))
    with incr.private_workdir(settings) as workdir:
        extras = incr.prepare(settings, open_store(settings.storage), decision, Path(workdir))
        if decision.fallback:  # one line; --json says it too (fallback_reason)
            typer.echo(
                f"warning: taking a full backup, not an incremental: {decision.reason}", err=True
            )
        result = take_physical_backup(settings, catalog, open_broker(settings), extras, jobs=jobs)
    m = result.manifest
    if json_out:
        data = m.model_dump(mode="json", exclude={"verification"}, exclude_none=True)
        # LSNs as "X/Y" strings (docs/JSON.md); the manifest file keeps its integers
        data["start_lsn"], data["end_lsn"] = data.pop("start_lsn_text"), data.pop("end_lsn_text")
        data |= decision.as_json() | {"backup_type": m.backup_type}
        emit_json(data | {"path": str(result.path), "cluster": settings.cluster, "ok": True})
        return
    kind = f"incremental backup (parent {m.parent_id})" if m.parent_id else "base backup"
    typer.echo(
        f"{kind} {result.backup_id}: timeline {m.timeline}, {m.start_wal} .. "
        f"{m.stop_wal}, {human_bytes(m.size)} ({human_bytes(m.data_size)} of data), "
        f"{m.duration_s:.1f}s; {m.verification.base_files_sha256_checked} files "
        f"verified against backup_manifest -> {result.path}"
    )


def restore_pitr(
    ctx: typer.Context,
    to: str | None = typer.Option(None, "--to", help="Target time, ISO 8601 (no zone = UTC)."),
    backup: str | None = typer.Option(
        None,
        "--backup",
        help="Use this base backup; without --to, restore it to its consistent point.",
    ),
    target_dir: Path = typer.Option(..., "--target-dir", help="Empty or new data directory."),
    port: int | None = typer.Option(
        None, "--port", help="Port for the restored server (default: a free one)."
    ),
    start: bool = typer.Option(
        False, "--start", help="Start the server and wait until recovery reached the target."
    ),
    target_action: TargetAction = typer.Option(
        TargetAction.promote, "--target-action", help="What the server does at the target."
    ),
    as_primary: bool = typer.Option(
        False,
        "--as-primary",
        help="This cluster becomes the new production: keep archiving (default: archive_mode=off).",
    ),
    owner: str = typer.Option(
        "postgres",
        "--owner",
        help="OS user that owns and runs the restored cluster (when pgvault runs as root).",
    ),
    timeout: float = typer.Option(3600, "--timeout", help="Seconds to wait for recovery."),
    tablespace_map: list[str] = typer.Option(
        [],
        "--tablespace-map",
        metavar="NAME=DIR",
        help="Restore this tablespace (name, oid or original location) into DIR "
        "(default: TARGET-DIR/pg_tblspc_data/NAME). Repeatable.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Result as JSON."),
) -> None:
    """Restore the cluster to a point in time (--to), or a base backup as it was (--backup).

    The catalog picks the newest verified base backup before T with an unbroken verified
    WAL chain to T (see `pgvault catalog restorable --at T`); exit 1 when T is not
    restorable. Every fetched file is checked against its sha256 and the extracted tree
    with pg_verifybackup. The restored cluster does not archive (it must never write a
    new timeline into the production archive) unless --as-primary is given.

    Tablespaces, whether in the base backup or created by replayed WAL, are restored
    under the target directory (or where --tablespace-map says), never at their source
    location: a restore on the production host cannot write into production's files.
    """
    from pgvault.ids import parse_time, utc_note
    from pgvault.keys import identities_for
    from pgvault.restore.pitr import restore_pitr as run
    from pgvault.restore.tablespaces import parse_map
    from pgvault.storage import open_store

    ts_map = parse_map(tablespace_map)
    if to is None and backup is None:
        raise UsageError("give --to T (point in time) or --backup ID (a base backup as it was)")
    try:
        when = parse_time(to) if to else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    note = utc_note(to) if to else None
    if note and not json_out:
        typer.echo(note, err=True)
    settings, catalog = _deps(ctx, restoring=True)
    result = run(
        settings,
        catalog,
        open_store(settings.storage),
        to=when,
        backup_id=backup,
        target_dir=target_dir,
        port=port,
        start=start,
        action=target_action.value,
        as_primary=as_primary,
        identities=identities_for(settings),
        owner=owner,
        timeout=timeout,
        tablespace_map=ts_map,
    )
    if json_out:
        emit_json({"cluster": settings.cluster, "ok": True, **result.as_dict()})
        return
    typer.echo(
        f"restored base backup {result.backup_id} into {result.target_dir} "
        f"(timeline {result.timeline}, {result.segments} WAL segments, "
        f"{human_bytes(result.wal_bytes)} to replay)"
    )
    for ts in result.tablespaces:
        typer.echo(
            f"tablespace {ts['name'] or ts['oid']} ({ts['from']}, source {ts['source_location']})"
            f" -> {ts['restored_to']}"
        )
    typer.echo(
        f"archive_mode = {result.archive_mode}"
        + (
            ""
            if result.archive_mode == "on"
            else " (a restored copy never archives into production; --as-primary keeps it on)"
        )
    )
    if result.started:
        typer.echo(
            f"recovery reached {result.target}: last replayed commit "
            f"{result.restored_to or '(none since the backup)'}, in {result.duration_s:.1f}s"
        )
        _print_connect(result.target_dir, result.socket_dir, result.port, owner, settings)
        _print_unlogged(result.unlogged)
    else:
        typer.echo(f"start it with: pg_ctl -D {result.target_dir} start  (port {result.port})")


def _print_connect(
    target_dir: str | Path, socket_dir: str, port: int, owner: str, settings: Settings
) -> None:
    """How to reach the restored server and how to stop it, ready to paste."""
    import os
    import shlex

    from pgvault.pgtools import find_tool

    user = settings.postgres.user
    pg_ctl = find_tool("pg_ctl", settings.postgres.bin_dir)
    stop = f"{shlex.quote(pg_ctl)} -D {shlex.quote(str(target_dir))} stop"
    if os.geteuid() == 0:
        stop = f"runuser -u {shlex.quote(owner)} -- {stop}"
    typer.echo(f"running on port {port}, socket directory {socket_dir}")
    typer.echo(
        f"connect: psql -h {shlex.quote(socket_dir)} -p {port} -U {shlex.quote(user)} postgres"
    )
    # a server stopped by hand leaves its (empty) socket directory: the stop line removes it
    typer.echo(f"stop:    {stop} && rm -r -- {shlex.quote(socket_dir)}")


def drill_pitr(
    ctx: typer.Context,
    scratch: Path | None = typer.Option(
        None, "--scratch-dir", help="Where to restore (default: the system temp directory)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed for the target time."),
    owner: str = typer.Option("postgres", "--owner", help="OS user running the scratch server."),
    json_out: bool = typer.Option(False, "--json", help="Result as JSON."),
) -> None:
    """Restore to a random time in the newest window from the STORE, check, clean up.

    Records the drill (result, measured RTO) in the catalog and alerts on failure; exit 1
    when the drill failed.
    """
    from pgvault.broker import open_broker
    from pgvault.keys import identities_for
    from pgvault.restore.drill_pitr import drill_pitr as run
    from pgvault.storage import open_store

    settings, catalog = _deps(ctx)
    root = scratch or Path(tempfile.gettempdir())
    result = run(
        settings,
        catalog,
        open_store(settings.storage),
        open_broker(settings),
        scratch=root,
        identities=identities_for(settings),
        seed=seed,
        owner=owner,
    )
    if json_out:
        emit_json(
            {
                "cluster": settings.cluster,
                "ok": result.ok,
                "target": result.target,
                "backup_id": result.backup_id,
                "duration_s": result.duration_s,
                "details": result.details,
            }
        )
    else:
        verdict = "ok" if result.ok else "FAILED"
        typer.echo(
            f"pitr drill {verdict}: target {result.target}, base backup "
            f"{result.backup_id}, RTO {result.duration_s:.1f}s"
            + ("" if result.ok else f": {result.details.get('error')}")
        )
        _print_unlogged(result.details.get("unlogged") or [])
    if not result.ok:
        raise typer.Exit(1)


def _print_unlogged(relations: list[Any]) -> None:
    """PostgreSQL empties unlogged relations in any restore: said, not mistaken for loss."""
    for rel in relations:
        typer.echo(
            f"unlogged {rel['kind']} {rel['schema']}.{rel['name']} in database {rel['db']}: "
            "empty after the restore (PostgreSQL does not WAL-log it; not data loss)"
        )


def wal_restore(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="%f: the WAL file PostgreSQL wants."),
    path: str = typer.Argument(..., help="%p: where to put it."),
) -> None:
    """PostgreSQL's restore_command: fetch one WAL file, verified, from spool or store.

    Set restore_command = 'pgvault wal-restore %f %p' (pgvault restore pitr does).
    Exit 0 when PATH holds the file (sha256 checked), 1 when it does not exist (normal
    end of recovery), 254 on any other failure so PostgreSQL aborts recovery instead of
    ending it early. Prefetches the next segments in the background.
    """
    from pgvault.cli import state
    from pgvault.restore import wal_restore as impl

    cfg = state(ctx).config
    raise typer.Exit(impl.main([name, path], str(cfg) if cfg else None))


def register(
    app: typer.Typer, backup_app: typer.Typer, restore_app: typer.Typer, drill_app: typer.Typer
) -> None:
    """Add the physical/PITR commands to their groups (wal-restore to the root app)."""
    app.command("wal-restore")(wal_restore)
    backup_app.command("physical")(backup_physical)
    restore_app.command("pitr")(restore_pitr)
    drill_app.command("pitr")(drill_pitr)
