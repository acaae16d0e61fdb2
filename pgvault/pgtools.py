"""PostgreSQL client programs: finding them and running them without a shell.

Debian puts pg_waldump, pg_verifybackup, initdb and pg_ctl under
/usr/lib/postgresql/<major>/bin only; `postgres.bin_dir` names the directory, and when it
is empty we look on PATH, then in the newest Debian version directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pgvault.errors import PostgresError

DEBIAN_ROOT = Path("/usr/lib/postgresql")


def find_tool(name: str, bin_dir: str = "") -> str:
    """Absolute path of a PostgreSQL client program, or PostgresError."""
    if bin_dir:
        candidate = Path(bin_dir) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
        raise PostgresError(f"{name} not found in postgres.bin_dir {bin_dir}")
    found = shutil.which(name)
    if found:
        return found
    if DEBIAN_ROOT.is_dir():
        versions = sorted(
            (p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        for vdir in versions:
            candidate = vdir / "bin" / name
            if os.access(candidate, os.X_OK):
                return str(candidate)
    raise PostgresError(f"{name} not found on PATH; set postgres.bin_dir")


def run_tool(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    what: str | None = None,
    inherit: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a client program; a non-zero exit is PostgresError with its last stderr line.
    `inherit=False`: the program sees only `env`, not this process's environment."""
    full_env = dict(os.environ) if inherit else {}
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, env=full_env, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise PostgresError(f"{args[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise PostgresError(f"{what or Path(args[0]).name} timed out after {timeout}s") from None
    if check and proc.returncode != 0:
        raise PostgresError(f"{what or Path(args[0]).name} failed: {last_line(proc.stderr)}")
    return proc


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def libpq_env(host: str, port: int, user: str, dbname: str | None = None) -> dict[str, str]:
    """Connection settings for client programs; the password stays in PGPASSWORD/.pgpass."""
    env = {"PGHOST": host, "PGPORT": str(port), "PGUSER": user}
    if dbname:
        env["PGDATABASE"] = dbname
    return env
