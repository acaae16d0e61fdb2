"""Tar extraction refuses everything that could write outside the target."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from pgvault.errors import RestoreError
from pgvault.restore.safetar import extract_zst_tar


def make_tar(path: Path, members: list[tuple[str, str, str | bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = str(payload)
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


def test_a_normal_tree_extracts(tmp_path: Path) -> None:
    arch = make_tar(
        tmp_path / "ok.tar.zst",
        [("dir", "base", ""), ("file", "base/1", "data"), ("file", "PG_VERSION", "15\n")],
    )
    assert extract_zst_tar(arch, tmp_path / "out") == 3
    assert (tmp_path / "out" / "base" / "1").read_text() == "data"


@pytest.mark.parametrize(
    "members",
    [
        [("file", "../evil", "x")],
        [("file", "/tmp/evil", "x")],
        [("sym", "x", "y/.."), ("sym", "y", "."), ("file", "x/evil", "x")],  # the review's case
        [("sym", "link", "/etc")],
        [("fifo", "pipe", "")],
    ],
)
def test_escapes_are_refused(tmp_path: Path, members: list[tuple[str, str, str]]) -> None:
    arch = make_tar(tmp_path / "bad.tar.zst", members)
    with pytest.raises(RestoreError):
        extract_zst_tar(arch, tmp_path / "out")
    assert not (tmp_path / "evil").exists()
