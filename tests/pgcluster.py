"""Throw-away PostgreSQL clusters for tests, run as the `postgres` user.

initdb refuses root, so every server program runs through `runuser -u postgres`. Each
cluster gets its own directory, free port and socket directory; `archive_command`
points at the pgvault CLI with the test's config file.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

PG_BIN = Path(
    os.environ.get("PGVAULT_TEST_PG_BIN")
    or sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
)
PG_USER = "postgres"
# scripts/pg-binaries.sh unpacks PostgreSQL 14-18 here (PGVAULT_PG_CACHE overrides)
PG_CACHE = Path(
    os.environ.get("PGVAULT_PG_CACHE") or Path(__file__).resolve().parent.parent / ".cache" / "pg"
)


def pg_bin_for(major: int) -> Path | None:
    """The bin/ directory of PostgreSQL `major`: the test cache, then Debian's layout."""
    for candidate in (PG_CACHE / str(major) / "bin", Path(f"/usr/lib/postgresql/{major}/bin")):
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    return None


INITDB_ARGS = ("-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")


@functools.cache
def _initdb_template(bin_dir: Path) -> Path:
    """One pristine initdb per test process, copied for every cluster (a copy takes a
    fraction of initdb's time). The copies share a system identifier, as clusters restored
    from one backup do; PGVAULT_TEST_FRESH_INITDB=1 runs initdb for every cluster."""
    base = Path(tempfile.mkdtemp(prefix="pgvault-initdb-template-"))
    os.chmod(base, 0o755)
    datadir = base / "pg"
    datadir.mkdir(mode=0o700)
    chown_pg(datadir)
    proc = as_postgres([str(bin_dir / "initdb"), "-D", str(datadir), *INITDB_ARGS])
    assert proc.returncode == 0, proc.stderr
    atexit.register(shutil.rmtree, base, True)
    return datadir


def pg_uid_gid() -> tuple[int, int]:
    pw = pwd.getpwnam(PG_USER)
    return pw.pw_uid, pw.pw_gid


def chown_pg(*paths: Path) -> None:
    uid, gid = pg_uid_gid()
    for path in paths:
        os.chown(path, uid, gid)
        if path.is_dir():
            for dirpath, dirs, files in os.walk(path):
                for name in dirs + files:
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def as_postgres(args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", PG_USER, "--", *args], text=True, capture_output=True, **kw
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, base: Path, name: str = "pg", bin_dir: Path | None = None) -> None:
        self.base = base
        self.bin = bin_dir or PG_BIN  # which PostgreSQL version runs this cluster
        self.datadir = base / name
        self.sockdir = base / f"{name}-run"  # socket and server log, owned by postgres
        self.logfile = self.sockdir / "server.log"
        self.port = free_port()

    # -- lifecycle ---------------------------------------------------------------
    def initdb(self, archive_command: str | None, extra: dict[str, str] | None = None) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        self.datadir.mkdir(mode=0o700)
        chown_pg(self.sockdir, self.datadir)
        if os.environ.get("PGVAULT_TEST_FRESH_INITDB") == "1":
            proc = as_postgres([str(self.bin / "initdb"), "-D", str(self.datadir), *INITDB_ARGS])
            assert proc.returncode == 0, proc.stderr
        else:
            # cp -a as root keeps the postgres ownership and modes of the template
            subprocess.run(
                ["cp", "-a", f"{_initdb_template(self.bin)}/.", str(self.datadir)],
                check=True,
                capture_output=True,
            )
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockdir}'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "fsync": "off",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        if archive_command:
            settings.update(
                archive_mode="on", archive_command=f"'{archive_command}'", archive_timeout="0"
            )
        settings.update(extra or {})
        with (self.datadir / "postgresql.auto.conf").open("a") as fh:
            for key, value in settings.items():
                fh.write(f"{key} = {value}\n")

    def start(self) -> None:
        proc = as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        assert proc.returncode == 0, f"{proc.stderr}\n{self.log_tail()}"

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            as_postgres(
                [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]
            )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-n:])
        except OSError:
            return ""

    # -- SQL -----------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres") -> str:
        quoted = dbname.replace("\\", "\\\\").replace("'", "\\'")
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname='{quoted}'"

    @contextlib.contextmanager
    def connect(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            yield conn

    def sql(self, query: str, params: Sequence[Any] = (), dbname: str = "postgres") -> list[Any]:
        with self.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def one(self, query: str, params: Sequence[Any] = (), dbname: str = "postgres") -> Any:
        rows = self.sql(query, params, dbname)
        return rows[0][0] if rows else None

    def switch_wal(self) -> str:
        """Write a commit, force a segment switch; returns the segment that was closed.
        (A switch on an empty segment is a no-op, hence the commit.)"""
        self.sql("SELECT txid_current()")
        name = self.one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        self.sql("SELECT pg_switch_wal()")
        return str(name)

    def wait_archived(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.one("SELECT last_archived_wal FROM pg_stat_archiver")
            if last and last >= name:
                return
            time.sleep(0.1)
        failed = self.sql("SELECT failed_count, last_failed_wal FROM pg_stat_archiver")
        raise AssertionError(
            f"{name} not archived within {timeout}s ({failed}); log:\n{self.log_tail()}"
        )

    def system_identifier(self) -> int:
        return int(self.one("SELECT system_identifier FROM pg_control_system()"))
