"""Printing: stable JSON for scripts, compact tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pgvault.units import human_bytes

if TYPE_CHECKING:
    from rich.console import Console

_consoles: dict[str, Console] = {}


def __getattr__(name: str) -> Console:
    """`console` and `err_console`, made (and rich imported) on first use: a command
    that prints no table does not pay for rich."""
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _consoles:
        from rich.console import Console

        if name == "console":
            # Piped output (cron mail, less, CI logs) gets wide lines, not wrapped cells.
            _consoles[name] = Console(highlight=False, width=None if sys.stdout.isatty() else 220)
        else:
            _consoles[name] = Console(stderr=True, highlight=False)
    return _consoles[name]


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_edge=False, box=None, pad_edge=False)
    for col in columns:
        t.add_column(col, no_wrap=True)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    __getattr__("console").print(t)


__all__ = ["emit_json", "human_bytes", "table"]
