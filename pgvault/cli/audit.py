"""`pgvault catalog audit`: the scheduled store audit, also run by hand (storeaudit.py)."""

from __future__ import annotations

import typer

from pgvault.cli.output import emit_json, human_bytes


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)


def audit_cmd(
    ctx: typer.Context,
    listing: bool = typer.Option(
        True, "--listing/--no-listing", help="Compare the store's object list with the catalog."
    ),
    readback: bool = typer.Option(
        True, "--readback/--no-readback", help="Re-prove sha256 of the next part of the cycle."
    ),
    budget: int | None = typer.Option(
        None,
        "--budget",
        min=1,
        help="Bytes to read back this run (default [audit] read_bytes_per_run).",
        show_default=False,
    ),
    new_cycle: bool = typer.Option(
        False, "--new-cycle", help="Start a new read-back cycle now, even if one is not due."
    ),
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
) -> None:
    """Audit the store against the catalog; exit 1 when objects are missing or damaged.

    Marks what is gone `missing` and what fails its sha256 `corrupt` at once (so
    `catalog restorable` and `catalog gaps` stop relying on it), re-uploads it from the
    spool when the spool still has it, alerts, and records the run for `check`.
    """
    from pgvault.catalog import open_catalog
    from pgvault.cli import state
    from pgvault.keys import identities_for
    from pgvault.storage import open_store
    from pgvault.storeaudit import run_audit

    settings = state(ctx).settings
    catalog = open_catalog(settings, create=False)
    report = run_audit(
        settings,
        catalog,
        open_store(settings.storage),
        identities_for(settings),
        listing=listing,
        readback=readback,
        budget=budget,
        new_cycle=new_cycle,
    )
    if json_out:
        emit_json({"cluster": settings.cluster, "ok": report.result == "ok", **report.to_json()})
    else:
        if report.listing:
            typer.echo(
                f"listing: {report.listed} object(s) listed, {report.checked} artifact(s) "
                f"checked, {len(report.missing)} missing"
            )
        if report.cycle_id is not None:
            state_text = (
                "complete"
                if report.cycle_complete
                else f"{report.cycle_remaining} artifact(s), "
                f"{human_bytes(report.cycle_remaining_bytes)} left"
            )
            typer.echo(
                f"read-back: {report.objects_read} artifact(s), {human_bytes(report.bytes_read)} "
                f"of {human_bytes(report.budget)} budget; cycle {report.cycle_id} {state_text}"
            )
        elif readback:
            typer.echo("read-back: the current cycle is complete; the next one is not due yet")
        for f in report.findings:
            healed = (
                " (re-upload from the spool requested)" if f.subject in report.reuploads else ""
            )
            typer.echo(f"{f.state.upper()} {f.subject}: {f.error}{healed}")
    if report.error:
        typer.echo(f"pgvault: error: store audit stopped: {report.error}", err=True)
        raise typer.Exit(1)
    if report.findings:
        raise typer.Exit(1)
