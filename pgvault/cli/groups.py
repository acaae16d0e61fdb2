"""The command groups whose members live in per-capability modules:
`backup`, `restore` and `drill` (logical: cli/logical.py, physical/PITR: cli/physical.py)."""

from __future__ import annotations

import typer

backup_app = typer.Typer(no_args_is_help=True, help="Take backups into the spool.")
restore_app = typer.Typer(no_args_is_help=True, help="Restore from the catalogued backups.")
drill_app = typer.Typer(no_args_is_help=True, help="Restore drills into scratch targets.")


def register(app: typer.Typer) -> None:
    from pgvault.cli import logical, physical, table

    logical.register(backup_app, restore_app, drill_app)
    physical.register(app, backup_app, restore_app, drill_app)
    table.register(restore_app, drill_app)
    app.add_typer(backup_app, name="backup")
    app.add_typer(restore_app, name="restore")
    app.add_typer(drill_app, name="drill")
