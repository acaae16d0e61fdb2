"""`backup physical`, `restore pitr`, `drill pitr`, `wal-restore`."""

from __future__ import annotations

import typer


def register(
    app: typer.Typer, backup_app: typer.Typer, restore_app: typer.Typer, drill_app: typer.Typer
) -> None:
    """Add the physical/PITR commands to their groups (wal-restore to the root app)."""
