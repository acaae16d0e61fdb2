"""A full spool (issue 15 §4): `wal-archive` on a real tmpfs filled to the last byte.

Whatever step runs out of space (the segment's copy, its checksum file, the lineage),
wal-archive exits 1 with one line, publishes nothing and leaves no temp file; once space
is freed, the same call succeeds. Runs the real CLI against a real tmpfs (needs root).
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.env import write_toml
from tests.walgen import write_segment

SEG = "000000010000000000000003"
SEG_SIZE = 1 << 20  # the smallest segment PostgreSQL allows (initdb --wal-segsize=1)
PAGE = 4096  # tmpfs allocates whole pages


@pytest.fixture
def tiny(workdir: Path) -> Iterator[Path]:
    mnt = workdir / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(mnt)],
        check=False,
        capture_output=True,
    )
    if proc.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def free_pages(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // PAGE


def fill(mnt: Path, leave_pages: int) -> Path:
    """Fill the filesystem to its last byte, then free exactly `leave_pages` pages."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    page = b"\xa5" * PAGE
    try:
        while True:
            try:
                os.write(fd, page)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        size = os.fstat(fd).st_size
        assert free_pages(mnt) == 0
        os.ftruncate(fd, size - size % PAGE - leave_pages * PAGE)
    finally:
        os.close(fd)
    assert free_pages(mnt) == leave_pages
    return filler


def archive(cfg: Path, path: Path, name: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "pgvault", "--config", str(cfg), "wal-archive", str(path), name]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def hidden_files(root: Path) -> list[str]:
    return sorted(
        os.path.join(d, n) for d, dirs, files in os.walk(root) for n in files + dirs if n[0] == "."
    )


def setup_spool(workdir: Path, tiny: Path) -> tuple[Path, Path, Path]:
    spool = tiny / "spool"
    (spool / "wal").mkdir(parents=True)
    src = workdir / "pg_wal"
    src.mkdir()
    cfg = workdir / "pgvault.toml"
    write_toml(cfg, {"cluster": "unit", "spool_dir": str(spool)})
    return cfg, spool, write_segment(src, SEG, seg_size=SEG_SIZE)


def assert_published(spool: Path, path: Path) -> None:
    stored = spool / "wal" / SEG
    assert stored.read_bytes() == path.read_bytes()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (spool / "wal" / (SEG + ".sha256")).read_text() == f"{sha}  {SEG}\n"
    assert "timelines=1\n" in (spool / "IDENTITY").read_text()
    assert hidden_files(spool) == []


SEG_PAGES = SEG_SIZE // PAGE


@pytest.mark.parametrize(
    "leave",
    [
        0,  # nothing fits
        SEG_PAGES // 2,  # the copy runs out half way
        # the copy fits and one more file of the three (checksum, IDENTITY) does not:
        SEG_PAGES,
        # the copy and one small file fit, the other does not (before the fix: the
        # segment was published, its checksum file failed, and every retry crashed)
        SEG_PAGES + 1,
    ],
    ids=["empty", "half-copy", "copy-only", "copy-and-one-page"],
)
def test_full_spool_publishes_nothing_then_recovers(workdir: Path, tiny: Path, leave: int) -> None:
    cfg, spool, path = setup_spool(workdir, tiny)
    filler = fill(tiny, leave)
    for _attempt in range(2):  # PostgreSQL retries: the retry fails just as cleanly
        proc = archive(cfg, path, SEG)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "spool" in proc.stderr and "full" in proc.stderr, proc.stderr
        assert sorted(p.name for p in (spool / "wal").iterdir()) == []
        assert hidden_files(spool) == []
        assert not (spool / "IDENTITY").exists()
        assert free_pages(tiny) == leave  # nothing left behind holds space
    filler.unlink()
    proc = archive(cfg, path, SEG)
    assert proc.returncode == 0, proc.stderr
    assert_published(spool, path)


def test_retry_of_a_published_segment_on_a_full_spool(workdir: Path, tiny: Path) -> None:
    """A segment published without its checksum file (by an older version, or a crash
    whose directory entries reached the disk out of order): the retry must repair it,
    and on a full disk fail in one line without leftovers instead of a traceback."""
    cfg, spool, path = setup_spool(workdir, tiny)
    (spool / "wal" / SEG).write_bytes(path.read_bytes())
    filler = fill(tiny, 0)
    for _attempt in range(2):
        proc = archive(cfg, path, SEG)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "full" in proc.stderr, proc.stderr
        assert hidden_files(spool) == []
        assert not (spool / "wal" / (SEG + ".sha256")).exists()
    filler.unlink()
    proc = archive(cfg, path, SEG)
    assert proc.returncode == 0, proc.stderr
    assert_published(spool, path)


def test_full_spool_then_another_segment_after_freeing(workdir: Path, tiny: Path) -> None:
    """After a full-disk failure the archive goes on: the next segment archives too."""
    cfg, spool, path = setup_spool(workdir, tiny)
    filler = fill(tiny, SEG_PAGES)
    assert archive(cfg, path, SEG).returncode == 1
    filler.unlink()
    assert archive(cfg, path, SEG).returncode == 0
    nxt = "000000010000000000000004"
    nxt_path = write_segment(path.parent, nxt, seg_size=SEG_SIZE)
    assert archive(cfg, nxt_path, nxt).returncode == 0
    assert sorted(p.name for p in (spool / "wal").iterdir()) == sorted(
        [SEG, SEG + ".sha256", nxt, nxt + ".sha256"]
    )
    assert hidden_files(spool) == []
