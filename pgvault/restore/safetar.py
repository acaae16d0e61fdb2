"""Extracting base backup tars without trusting their member names.

Python 3.12's `tarfile.data_filter` (backported to 3.11.4) is used when present; on older
interpreters the same rules apply here: no absolute paths, no `..`, no links that leave
the target, no device or FIFO members; modes are masked to the owner.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import zstandard

from pgvault.errors import RestoreError


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _checked(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        name = member.name
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts:
            raise RestoreError(f"refusing unsafe path {name!r} in the backup archive")
        if member.ischr() or member.isblk() or member.isfifo():
            raise RestoreError(f"refusing device/FIFO member {name!r} in the backup archive")
        if member.issym() or member.islnk():
            link = Path(member.linkname)
            base = dest if member.islnk() else (dest / name).parent
            if link.is_absolute() or not _inside(dest, base / link):
                raise RestoreError(
                    f"refusing link {name!r} -> {member.linkname!r} outside the target"
                )
        member.mode = (
            (member.mode or 0o600) & 0o700 if member.isdir() or member.isfile() else member.mode
        )
        yield member


def extract_zst_tar(archive: Path, dest: Path) -> int:
    """Extract a .tar.zst (streaming) into dest; returns the number of members."""
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    with archive.open("rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh)
        with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as tar:
            data_filter = getattr(tarfile, "data_filter", None)
            for member in _checked(tar, dest):
                if data_filter is not None:
                    tar.extract(member, dest, filter="data")
                else:
                    tar.extract(member, dest)
                count += 1
    return count


def chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirs, files in os.walk(root):
        os.chown(dirpath, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
