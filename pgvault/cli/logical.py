"""`backup logical`, `restore logical`, `drill logical`."""

from __future__ import annotations

import typer


def register(backup_app: typer.Typer, restore_app: typer.Typer, drill_app: typer.Typer) -> None:
    """Add the logical commands to their groups."""
