"""`pgvault catalog ...`: what is stored, in which state, and what is missing."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from pgvault.cli.output import emit_json, human_bytes, table

app = typer.Typer(no_args_is_help=True, help="Query and maintain the catalog.")


class Kind(StrEnum):
    wal = "wal"
    history = "history"
    logical = "logical"
    physical = "physical"


class StateFilter(StrEnum):
    ready = "ready"
    stored = "stored"
    verified = "verified"
    corrupt = "corrupt"
    missing = "missing"


def _catalog(ctx: typer.Context, create: bool = False) -> Any:
    from pgvault.catalog import open_catalog
    from pgvault.cli import state

    return open_catalog(state(ctx).settings, create=create)


def _short_time(value: str | None) -> str:
    """'2026-11-24T06:31:47.123456Z' -> '2026-11-24 06:31:47' (UTC)."""
    return value[:19].replace("T", " ") if value else ""


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    kind: Kind | None = typer.Option(None, "--kind", help="Only this artifact kind."),
    state_: StateFilter | None = typer.Option(None, "--state", help="Only this state."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many rows."),
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
) -> None:
    """List catalogued artifacts with their state, LSNs, commit times and checksums."""
    from pgvault.catalog.queries import list_artifacts

    cat = _catalog(ctx)
    rows = list_artifacts(
        cat, kind.value if kind else None, state_.value if state_ else None, limit
    )
    if json_out:
        emit_json(
            {
                "cluster": cat.cluster,
                "ok": True,
                "count": len(rows),
                "artifacts": [r.to_json() for r in rows],
            }
        )
        return
    table(
        None,
        [
            "kind",
            "name",
            "state",
            "tli",
            "start lsn",
            "first commit",
            "last commit",
            "size",
            "stored",
            "verified at",
        ],
        [
            (
                r.kind,
                r.name,
                r.state,
                r.timeline,
                j["start_lsn"],
                _short_time(r.first_commit),
                _short_time(r.last_commit),
                human_bytes(r.size),
                human_bytes(r.stored_size),
                _short_time(r.verified_at),
            )
            for r, j in ((r, r.to_json()) for r in rows)
        ],
    )
    typer.echo(f"{len(rows)} artifact(s)")


@app.command("gaps")
def gaps_cmd(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Stable JSON."),
) -> None:
    """Report missing WAL segments in each timeline's chain; exit 1 when there are gaps.

    A segment is missing when it was never catalogued between the first and last known
    segment of its timeline, or when verify found its object missing or corrupt.
    Segments still on their way (ready/stored) are listed as pending, not as gaps.
    """
    from pgvault.catalog.wal import chains

    cat = _catalog(ctx)
    report: list[dict[str, Any]] = []
    gap_count = 0
    for ch in chains(cat.conn):
        gaps = ch.gaps
        gap_count += len(gaps)
        report.append(
            {
                "timeline": ch.timeline,
                "first": ch.name(ch.first_segno),
                "last": ch.name(ch.last_segno),
                "segments": ch.segments,
                "verified": ch.verified,
                "pending": sum(h.pending for h in ch.holes),
                "gaps": [
                    {
                        "first": ch.name(h.first_segno),
                        "last": ch.name(h.last_segno),
                        "count": h.count,
                        "absent": h.absent,
                        "corrupt": h.corrupt,
                        "missing": h.missing,
                        "pending": h.pending,
                        "names": h.names,
                    }
                    for h in gaps
                ],
            }
        )
    if json_out:
        emit_json(
            {
                "cluster": cat.cluster,
                "ok": gap_count == 0,
                "gap_count": gap_count,
                "timelines": report,
            }
        )
    else:
        if not report:
            typer.echo("no WAL segments catalogued yet")
        for tl in report:
            typer.echo(
                f"timeline {tl['timeline']}: {tl['first']} .. {tl['last']}, "
                f"{tl['verified']}/{tl['segments']} verified, {tl['pending']} pending, "
                f"{len(tl['gaps'])} gap(s)"
            )
            for g in tl["gaps"]:
                detail = ", ".join(f"{k} {g[k]}" for k in ("absent", "missing", "corrupt") if g[k])
                typer.echo(f"  gap {g['first']} .. {g['last']} ({g['count']} segments: {detail})")
                typer.echo(f"    {' '.join(g['names'])}")
    if gap_count:
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    kind: Kind | None = typer.Option(None, "--kind", help="Only this artifact kind."),
    name: list[str] = typer.Option([], "--name", help="Only this artifact (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Stable JSON."),
) -> None:
    """Ask the verify workers to read back stored artifacts again.

    Publishes a `stored` event for each stored/verified/corrupt/missing artifact; the
    verify worker re-reads it from the store, and the catalog records the result
    (a deleted or damaged object becomes missing/corrupt and shows up in `gaps`).
    """
    from pgvault.broker import open_broker
    from pgvault.catalog.queries import list_artifacts
    from pgvault.cli import state
    from pgvault.schemas import ArtifactEvent

    settings = state(ctx).settings
    cat = _catalog(ctx)
    rows = list_artifacts(cat, kind.value if kind else None)
    if name:
        rows = [r for r in rows if r.name in set(name)]
    rows = [r for r in rows if r.state != "ready" and all(f.get("key") for f in r.files)]
    broker = open_broker(settings)
    for r in rows:
        broker.publish_event(
            ArtifactEvent.model_validate(
                {
                    "cluster": settings.cluster,
                    "kind": r.kind,
                    "state": "stored",
                    "name": r.name,
                    "files": tuple(r.files),
                    "meta": r.meta,
                }
            )
        )
    broker.close()
    if json_out:
        emit_json({"cluster": settings.cluster, "ok": True, "requested": len(rows)})
    else:
        typer.echo(f"re-verification requested for {len(rows)} artifact(s)")
