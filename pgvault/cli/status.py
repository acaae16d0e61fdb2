"""`pgvault status`: one screen for "are we safe?"."""

from __future__ import annotations

import typer

from pgvault.cli.output import console, emit_json

_STYLE = {"OK": "bold green", "WARNING": "bold yellow", "CRITICAL": "bold red"}


def status(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
) -> int:
    """Verdict (OK / WARNING / CRITICAL / UNKNOWN), stage consumers, restorable windows and
    gaps, newest backups, WAL lag, last drills, and only the failing checks.

    Exit codes as `check`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Publishes no alerts.
    """
    from pgvault.cli import state
    from pgvault.status.model import build
    from pgvault.status.text import lines

    view = build(state(ctx).settings)
    if json_out:
        emit_json(view.as_json())
        return view.exit_code
    out = lines(view)
    if console.is_terminal:
        console.print(out[0], style=_STYLE.get(out[0], "bold"), markup=False)
        for line in out[1:]:
            style = "bold" if not line.startswith(" ") else None
            console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)
    else:
        for line in out:
            typer.echo(line)
    return view.exit_code


def register(app: typer.Typer) -> None:
    app.command("status")(status)
