"""Socket directories of restored servers: the 107-byte path limit and what is removed
(no server needed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from pgvault.restore.server import (
    MAX_SOCKET_PATH,
    make_socket_dir,
    remove_socket_dir,
    socket_path,
)


def test_a_long_tmpdir_falls_back_to_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long_dir = tmp_path / ("x" * 90)
    long_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
    made = make_socket_dir(54321)
    try:
        assert not made.is_relative_to(long_dir) and made.parent == Path("/tmp")
        assert len(bytes(socket_path(made, 54321))) <= MAX_SOCKET_PATH
        assert made.stat().st_mode & 0o077 == 0
    finally:
        remove_socket_dir(made)
    assert not made.exists()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    short = make_socket_dir(5432)
    assert short.parent == tmp_path
    remove_socket_dir(short)
    assert not short.exists()


def test_only_directories_pgvault_made_are_removed(tmp_path: Path) -> None:
    mine = tmp_path / "operator-sockets"
    mine.mkdir()
    remove_socket_dir(mine)
    assert mine.is_dir()
