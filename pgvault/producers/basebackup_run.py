"""Running pg_basebackup: its arguments (one function), the directory run the tablespace
fallback uses, and the one-pass stream (`-D - -Ft -Xfetch`) read by bbstream.

Why `-D - -Xfetch` for the one-pass path (issue 18 weighed three ways):
- `-D - -Xstream` is refused by pg_basebackup (it cannot stream WAL into stdout);
- `-D - -Xnone` plus the WAL from pgvault's own archive ties every backup to
  archive_command being pgvault's and to the spool still holding those segments;
- BASE_BACKUP over the replication protocol through psycopg means parsing two copy
  formats (PostgreSQL 14's per-tablespace CopyOut, 15+'s archive/manifest messages) for
  what pg_basebackup already does correctly on every major.
With -Xfetch the server appends the WAL from the backup's start to its end to the same
tar, and pg_basebackup injects backup_manifest after it: one stream, read once, on 14-18
alike. -Xfetch's known weakness -- the start segment recycled by a checkpoint before the
server sends it -- is closed by a temporary physical replication slot that reserves WAL
from before the backup's checkpoint and lives exactly as long as our session (a crash
leaves nothing behind). Without a free slot the backup still runs, as plain -Xfetch.
pg_basebackup cannot write extra tablespaces to stdout: clusters with tablespaces use
the directory run (physical_classic).

Measured (docs/BENCHMARKS.md, pgbench s=50, same cluster): receiving BASE_BACKUP in
process through libpq costs 0.52 CPU-s per 0.8 GB against ~0.7 for pg_basebackup's pipe
plus our read, ~10 % of the whole backup's client CPU: not worth a second copy-protocol
parser per major. The pass itself is SHA-256 (0.6 s/GiB) + zstd level 3 (1.1-1.3 s/GiB,
the same with 1 or 2 threads).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from pgvault import pg
from pgvault.config import Settings
from pgvault.errors import PostgresError
from pgvault.pgtools import find_tool, last_line, libpq_env, run_tool, tool_major
from pgvault.producers.bbstream import StreamResult, StreamTruncated, split_stream
from pgvault.progress import watch_file

log = logging.getLogger(__name__)
PIPE_SIZE = 1 << 20  # Linux's default pipe-max-size: fewer, larger reads


def basebackup_args(
    tool: str,
    target: str,
    backup_id: str,
    *,
    wal: str,
    compress: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """pg_basebackup's command line, the one place it is built: tar format into `target`
    ("-" = stdout), `wal` = "stream" | "fetch", `compress` its --compress value or None,
    `extra_args` appended (e.g. --incremental=<parent manifest>)."""
    return [
        tool,
        "-D",
        target,
        "-Ft",
        f"-X{wal}",
        *([f"--compress={compress}"] if compress else []),
        "--checkpoint=fast",
        "--manifest-checksums=SHA256",
        "--no-password",
        f"--label=pgvault-{backup_id}",
        *extra_args,
    ]


@functools.cache
def client_zstd(tool: str) -> bool:
    """Whether this pg_basebackup compresses with zstd itself (15+ built with zstd): asked
    with a connection that cannot succeed, so only the option check answers. PostgreSQL
    14 reads any --compress value as a gzip level (atoi: "client-zstd" is 0, no
    compression), hence the version test first."""
    if tool_major(tool) < 15:
        return False
    proc = run_tool(
        [tool, "-D", "/nonexistent/pgvault-probe", "-Ft", "--compress=client-zstd",
         "--no-password", "-d", "host=/nonexistent/pgvault-probe port=1"],
        env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")},
        inherit=False,
        check=False,
        timeout=30,
    )  # fmt: skip
    err = proc.stderr.lower()
    return "compression" not in err and "unrecognized option" not in err


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
    return total


def run_to_directory(
    settings: Settings,
    target: Path,
    backup_id: str,
    major: int | None,
    *,
    total: int | None = None,
    extra_args: Sequence[str] = (),
) -> bool:
    """pg_basebackup -Xstream into `target`; True when it compressed the tars itself."""
    pgs = settings.postgres
    tool = find_tool("pg_basebackup", pgs.bin_dir, major)
    zstd = client_zstd(tool)
    level = settings.storage.compression_level
    args = basebackup_args(
        tool,
        str(target),
        backup_id,
        wal="stream",
        compress=f"client-zstd:level={level}" if zstd else None,
        extra_args=extra_args,
    )
    env = libpq_env(pgs.host, pgs.port, pgs.user)
    with watch_file("pg_basebackup", lambda: dir_size(target), total=total):
        run_tool(args, env=env, what="pg_basebackup")
    return zstd


@contextlib.contextmanager
def wal_reserved(settings: Settings, backup_id: str) -> Iterator[str | None]:
    """A temporary physical slot reserving WAL from now on, for as long as the block runs
    (the server drops it with our session, however that ends); None when the server has
    no slot to give, and the backup runs as plain -Xfetch."""
    name = "pgvault_bb_" + re.sub(r"[^a-z0-9_]", "_", backup_id.lower())[:40] + f"_{os.getpid()}"
    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(pg.connect(settings.postgres))
            pg.fetch_one(
                conn, "SELECT pg_create_physical_replication_slot(%s, true, true)", (name,)
            )
        except PostgresError as exc:
            stack.close()
            log.warning("no WAL reservation for the backup (-Xfetch without a slot): %s", exc)
            yield None
            return
        yield name


def stream_basebackup(
    settings: Settings,
    out_dir: Path,
    backup_id: str,
    major: int | None,
    *,
    threads: int,
    total: int | None = None,
    extra_args: Sequence[str] = (),
) -> StreamResult:
    """pg_basebackup -D - -Xfetch read in one pass into out_dir (bbstream.split_stream)."""
    pgs = settings.postgres
    tool = find_tool("pg_basebackup", pgs.bin_dir, major)
    args = basebackup_args(tool, "-", backup_id, wal="fetch", extra_args=extra_args)
    env = {**os.environ, **libpq_env(pgs.host, pgs.port, pgs.user)}
    seen = [0]
    with (
        wal_reserved(settings, backup_id),
        tempfile.TemporaryFile() as errors,
        watch_file("pg_basebackup", lambda: seen[0], total=total),
    ):
        try:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, env=env)
        except FileNotFoundError:
            raise PostgresError(f"{tool} not found") from None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)

        def read(n: int) -> bytes:
            data = os.read(fd, n)
            seen[0] += len(data)
            return data

        try:
            result = split_stream(
                read, out_dir, level=settings.storage.compression_level, threads=threads
            )
        except BaseException as exc:
            _reap(proc, errors, ended=isinstance(exc, StreamTruncated))
            raise
        finally:
            proc.stdout.close()
        if proc.wait() != 0:
            raise PostgresError(f"pg_basebackup failed: {_last_error(errors)}")
    return result


def _last_error(errors: IO[bytes]) -> str:
    errors.seek(0)
    return last_line(errors.read().decode("utf-8", "replace"))


def _reap(proc: subprocess.Popen[bytes], errors: IO[bytes], *, ended: bool) -> None:
    """The stream failed. When it ended early pg_basebackup is the likely cause: its own
    error is the clearer one. Otherwise (pgvault refused what it read) stop it."""
    if ended:
        with contextlib.suppress(subprocess.TimeoutExpired):
            if proc.wait(timeout=30) != 0:
                raise PostgresError(f"pg_basebackup failed: {_last_error(errors)}") from None
    if proc.poll() is None:
        proc.kill()
    proc.wait()
