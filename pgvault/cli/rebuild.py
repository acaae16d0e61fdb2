"""`pgvault catalog rebuild` and `pgvault catalog export`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import typer

from pgvault.cli.output import emit_json

if TYPE_CHECKING:
    from pgvault.catalog.db import CatalogDB
    from pgvault.catalog.rebuild import RebuildReport
    from pgvault.config import Settings


def run_rebuild(
    settings: Settings, catalog: CatalogDB, *, verify: bool = False, verify_all: bool = False
) -> tuple[RebuildReport, int, list[str]]:
    """Rebuild (and optionally read back); shared with restores on a fresh host."""
    from pgvault.catalog.rebuild import rebuild
    from pgvault.catalog.reverify import verify_unproven
    from pgvault.keys import identities_for
    from pgvault.progress import counter
    from pgvault.storage import open_store
    from pgvault.storage.layout import Layout

    store = open_store(settings.storage)
    layout = Layout(settings.storage.prefix, settings.cluster)
    with counter(f"listing {store.describe()}", "objects") as tick:
        report = rebuild(catalog, store, layout, tick=tick)
    checked, bad = 0, list[str]()
    if verify or verify_all:
        with counter("reading objects back", "artifacts") as tick:
            checked, bad = verify_unproven(
                catalog, store, identities_for(settings), everything=verify_all, tick=tick
            )
    return report, checked, bad


def catalog_for_restore(settings: Settings) -> CatalogDB:
    """The catalog; on a host that has none (the VM is gone), rebuilt from the store first,
    into a side file renamed into place only when complete (an interrupted rebuild must
    not leave a partial catalog that later runs would trust)."""
    from pgvault.catalog import open_catalog

    if settings.catalog_path.exists():
        return open_catalog(settings, create=False)
    typer.echo(
        f"no catalog at {settings.catalog_path}: rebuilding it from the store first "
        "(pgvault catalog rebuild)",
        err=True,
    )
    side = settings.catalog_path.with_name(settings.catalog_path.name + ".rebuilding")
    for stale in (side, *(side.with_name(side.name + x) for x in ("-wal", "-shm"))):
        stale.unlink(missing_ok=True)
    catalog = open_catalog(settings.model_copy(update={"catalog_path": side}))
    report, _checked, _bad = run_rebuild(settings, catalog)
    catalog.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    catalog.close()
    os.replace(side, settings.catalog_path)
    typer.echo(
        f"rebuilt: {report.verified} verified and {report.unproven} unproven artifacts "
        f"from {report.objects} objects",
        err=True,
    )
    return open_catalog(settings, create=False)


def rebuild_cmd(
    ctx: typer.Context,
    from_store: bool = typer.Option(
        True,
        "--from-store",
        help="Rebuild from the object store (the only source; accepted for clarity).",
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Also read back every object not "
        "proven verified (resumable: reruns skip what is proven).",
    ),
    verify_all: bool = typer.Option(False, "--verify-all", help="Read back everything."),
    json_out: bool = typer.Option(False, "--json", help="The report as JSON."),
) -> None:
    """Recreate the catalog from the store alone, or reconcile it with the store.

    Lists the cluster's prefix, reads the verification receipts the producer exports
    (so what was verified comes back verified), describes everything else from object
    metadata and backup manifests (state `stored` until read back), marks catalogued
    artifacts whose objects are gone as `missing`, and reports backups without their
    manifest (incomplete: never restorable) and objects it does not recognise.
    Exit 1 when --verify found damaged objects.
    """
    from pgvault.catalog import open_catalog
    from pgvault.cli import state

    settings = state(ctx).settings
    catalog = open_catalog(settings)
    report, checked, bad = run_rebuild(settings, catalog, verify=verify, verify_all=verify_all)
    data: dict[str, Any] = report.as_dict() | {"read_back": checked, "corrupt": bad}
    if json_out:
        emit_json({"cluster": settings.cluster, "ok": not bad} | data)
    else:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.by_kind.items())) or "nothing"
        typer.echo(f"rebuilt from {report.objects} objects ({report.receipts} receipts): {kinds}")
        typer.echo(
            f"  verified (receipted): {report.verified}; present but not proven: "
            f"{report.unproven}"
            + (
                ""
                if verify or verify_all or not report.unproven
                else " (run with --verify to read them back)"
            )
        )
        for label, items in (
            ("new to the catalog", report.added),
            ("catalogued but gone from the store", report.missing),
            ("incomplete backups (no manifest.json)", report.incomplete),
            ("objects that are not pgvault artifacts", report.unknown),
            ("damaged (read back)", bad),
        ):
            if items:
                shown = ", ".join(items[:10]) + (
                    f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                )
                typer.echo(f"  {label}: {len(items)}: {shown}")
        if checked:
            typer.echo(f"  read back {checked} artifact(s)")
    if bad:
        raise typer.Exit(1)


def export_cmd(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Counts as JSON."),
) -> None:
    """Write the verification receipts to the store now (the producer does it every
    rescan). They let `catalog rebuild` restore the verified state exactly."""
    from pgvault.catalog import open_catalog
    from pgvault.catalog.export import export
    from pgvault.cli import state
    from pgvault.storage import open_store
    from pgvault.storage.layout import Layout

    settings = state(ctx).settings
    stats = export(
        open_catalog(settings),
        open_store(settings.storage),
        Layout(settings.storage.prefix, settings.cluster),
        encrypted=bool(settings.encryption.recipients),
    )
    if json_out:
        emit_json(
            {
                "cluster": settings.cluster,
                "ok": True,
                "written": stats.written,
                "deleted": stats.deleted,
            }
        )
    else:
        typer.echo(f"receipts written: {stats.written}, removed: {stats.deleted}")


def register(catalog_app: typer.Typer) -> None:
    catalog_app.command("rebuild")(rebuild_cmd)
    catalog_app.command("export")(export_cmd)
