"""Extracting base backup tars without trusting their member names.

A restore runs as root when it restores for another owner, so a hostile or damaged tar
must not be able to write outside the target: every member's path (with any directory
already extracted resolved, so a symlinked directory cannot smuggle it out) must stay
inside the target; absolute paths, `..`, devices and FIFOs are refused; and link members
are refused altogether: a tar-format base backup has none (tablespaces come as their own
`<oid>.tar`, extracted into their mapped directories, and linked by pgvault itself).
Modes are masked to the owner.
Python's `tarfile.data_filter` (3.11.4+) is applied on top when the interpreter has it.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import zstandard

from pgvault.errors import RestoreError


def safe_target(root: str, name: str) -> str:
    """Where member `name` goes under `root` (a realpath): no absolute path, no `..`,
    nothing that resolves outside root through what is already there. The path is
    normalised, not resolved: a link at its last component is for O_NOFOLLOW to refuse."""
    if name.startswith("/") or ".." in Path(name).parts:
        raise RestoreError(f"refusing unsafe path {name!r} in the backup archive")
    path = os.path.normpath(os.path.join(root, name))
    resolved = os.path.realpath(path)
    if resolved != root and not resolved.startswith(root + os.sep):
        raise RestoreError(f"refusing {name!r}: it would land outside the target")
    return path


def _checked(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    root = os.path.realpath(dest)
    for member in tar:
        name = member.name
        if member.issym() or member.islnk():
            raise RestoreError(
                f"refusing link {name!r} -> {member.linkname!r} in the backup archive "
                "(tablespaces and links are not restored)"
            )
        if not (member.isfile() or member.isdir()):
            raise RestoreError(f"refusing special member {name!r} in the backup archive")
        safe_target(root, name)
        member.mode = (member.mode or 0o600) & 0o700
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
