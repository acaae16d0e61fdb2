"""Progress on long work: a live line on a terminal, nothing under systemd or cron."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only when a terminal shows the progress
    from rich.console import Console


def interactive() -> bool:
    return sys.stderr.isatty()


def _console() -> Console:
    """Progress goes to stderr, the stream `interactive()` tested: with stdout redirected
    (`pgvault backup logical > report.txt`) the file gets no bars and no escapes."""
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def byte_progress(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n_bytes)`. Shows bytes, rate and elapsed time when stderr is a TTY."""
    if not interactive():
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn() if total else TextColumn(""),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, transient=True, console=_console()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def watch_file(
    label: str, path_size: Callable[[], int], poll_s: float = 0.5, total: int | None = None
) -> Iterator[None]:
    """Show a growing output file's size while a child process writes it. `total` (the
    database size, known before a dump or base backup starts) adds a bar and an ETA; a
    compressed output ends below it, so the ETA is an upper bound."""
    if not interactive():
        yield
        return
    import threading

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    stop = threading.Event()
    sized = [BarColumn(), TimeRemainingColumn()] if total else []
    with Progress(
        TextColumn("{task.description}"),
        *sized,
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=_console(),
    ) as bar:
        task = bar.add_task(label, total=total or None)

        def poll() -> None:
            while not stop.wait(poll_s):
                bar.update(task, completed=path_size())

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def elapsed(start: float) -> str:
    secs = time.monotonic() - start
    return f"{secs:.1f}s" if secs < 120 else f"{secs / 60:.1f}min"


@contextmanager
def counter(label: str, unit: str) -> Iterator[Callable[[int], None]]:
    """Yields `tick(n)`: a live count of things done (objects listed, files checked)."""
    if not interactive():
        yield lambda _n: None
        return
    from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        transient=True,
        console=_console(),
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.advance(task, n)
