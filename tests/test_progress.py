"""Progress on a terminal: with the database size known, a dump or base backup shows a
total and an ETA (`21.9/? MB` before). No service."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from pgvault import progress


def render(monkeypatch: pytest.MonkeyPatch, total: int | None) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    monkeypatch.setattr(progress, "interactive", lambda: True)
    monkeypatch.setattr(progress, "_console", lambda: console)
    written = [0]

    def size() -> int:
        written[0] += 250_000
        return written[0]

    with progress.watch_file("pg_dump shop", size, poll_s=0.05, total=total):
        time.sleep(0.4)
    return out.getvalue()


def test_a_known_size_gives_a_total_and_an_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = render(monkeypatch, 10_000_000)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert "/10.0 MB" in plain and "━" in plain, plain  # a total and a bar
    assert re.search(r"━ \d+:\d\d:\d\d \d+\.\d/10\.0 MB", plain), plain  # an ETA
    unknown = render(monkeypatch, None)
    assert "/10.0 MB" not in unknown and "━" not in unknown
