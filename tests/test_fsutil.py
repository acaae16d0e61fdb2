"""pgvault.fsutil: durable writes that survive short writes, and verified spool copies.

Short writes are produced for real: a blocking pipe whose writer is interrupted by a
timer signal (write(2) then returns the bytes it had moved), and a file size limit
(RLIMIT_FSIZE), where write(2) writes up to the limit and returns a short count.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgvault import fsutil
from pgvault.errors import IntegrityError


@pytest.fixture
def interrupted_pipe() -> Iterator[tuple[int, bytearray, threading.Thread]]:
    """A pipe drained slowly by a thread, with SIGALRM firing every millisecond."""
    r, w = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 65536):
            received.extend(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=drain)
    reader.start()
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        yield w, received, reader
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(w)
        reader.join()
        os.close(r)


def test_write_all_completes_across_short_writes(
    interrupted_pipe: tuple[int, bytearray, threading.Thread],
) -> None:
    w, received, _reader = interrupted_pipe
    probe = os.urandom(4 << 20)
    moved = os.write(w, probe)  # one plain write: short, which is what the loop is for
    assert 0 < moved < len(probe)
    data = os.urandom(8 << 20)
    assert fsutil.write_all(w, data) == len(data)
    signal.setitimer(signal.ITIMER_REAL, 0)
    # everything arrives, in order, after the probe's part
    deadline = time.monotonic() + 30
    while len(received) < moved + len(data) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bytes(received) == probe[:moved] + data


LIMITED = """
import os, resource, sys
from pgvault import fsutil
resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))
target = sys.argv[1]
fd = os.open(target + ".plain", os.O_WRONLY | os.O_CREAT, 0o600)
print("plain", os.write(fd, b"x" * 20000))  # short, silently
os.close(fd)
try:
    fsutil.write_atomic(target, b"y" * 20000)
except OSError as exc:
    print("atomic", exc.errno)
else:
    print("atomic ok")
"""


def test_short_write_at_a_size_limit_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    """A single os.write stops at the limit and reports success for fewer bytes; the
    loop goes on, gets the error, and the temp file is removed: no truncated file."""
    target = tmp_path / "IDENTITY"
    target.write_bytes(b"old\n")
    out = subprocess.run(
        [sys.executable, "-c", LIMITED, str(target)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert out[0] == "plain 10000"
    assert out[1] == f"atomic {errno.EFBIG}"
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IDENTITY", "IDENTITY.plain"]


def test_write_atomic_replaces_with_mode_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "key.txt"
    target.write_text("old")
    fsutil.write_atomic(target, b"new contents\n", mode=0o600)
    assert target.read_bytes() == b"new contents\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.txt"]
    fsutil.write_atomic(str(tmp_path / "plain"), memoryview(b"abc"))
    assert (tmp_path / "plain").read_bytes() == b"abc"


def test_write_atomic_into_a_missing_directory_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsutil.write_atomic(tmp_path / "nope" / "file", b"x")
    assert list(tmp_path.iterdir()) == []


def test_write_file_refuses_an_existing_name(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        fsutil.write_file(tmp_path / "f", b"other")
    assert (tmp_path / "f").read_bytes() == b"keep"


def test_copy_verified(tmp_path: Path) -> None:
    src = tmp_path / "seg"
    src.write_bytes(os.urandom(3 << 20))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    seen: list[int] = []
    assert fsutil.copy_verified(src, tmp_path / "out", sha, advance=seen.append) == 3 << 20
    assert (tmp_path / "out").read_bytes() == src.read_bytes() and sum(seen) == 3 << 20
    (tmp_path / "dest").write_bytes(b"untouched")
    with pytest.raises(IntegrityError, match="does not match"):
        fsutil.copy_verified(src, tmp_path / "dest", "0" * 64)
    assert (tmp_path / "dest").read_bytes() == b"untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "out", "seg"]
    with pytest.raises(FileNotFoundError):
        fsutil.copy_verified(tmp_path / "absent", tmp_path / "dest2", sha)
    assert not (tmp_path / "dest2").exists()
