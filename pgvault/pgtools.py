"""PostgreSQL client programs: finding them and running them without a shell.

Debian puts pg_waldump, pg_verifybackup, initdb and pg_ctl under
/usr/lib/postgresql/<major>/bin only; `postgres.bin_dir` names the directory, and when it
is empty we look on PATH, then in the newest Debian version directory.

Version-aware look-ups (`find_tool(..., major=N)`, `bin_dir_for(N)`) pick the program of
the server's (or the backup's) own major version from the configured directory, PATH and
/usr/lib/postgresql/<N>/bin; an older one is refused in one line naming the version needed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pgvault.errors import PostgresError

DEBIAN_ROOT = Path("/usr/lib/postgresql")
# programs that work against an older server (pg_dump 17 dumps a 15 server); every other
# one (pg_basebackup, pg_waldump, pg_ctl, postgres, pg_verifybackup ...) must match exactly
NEWER_OK = frozenset({"pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_amcheck"})


def find_tool(name: str, bin_dir: str = "", major: int | None = None) -> str:
    """Absolute path of a PostgreSQL client program, or PostgresError. With `major`: the
    program of that major version (see `versioned_tool`)."""
    if major:
        return versioned_tool(name, major, bin_dir)
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


@functools.cache
def tool_version(path: str) -> str:
    """The version a PostgreSQL program reports (`pg_dump (PostgreSQL) 17.2` -> "17.2"),
    "" when it does not say."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"\) (\d+(?:\.\d+)?)", out) or re.search(r"(\d+(?:\.\d+)?)", out)
    return match.group(1) if match else ""


def tool_major(path: str) -> int:
    version = tool_version(path)
    return int(version.split(".")[0]) if version else 0


def _candidates(name: str, major: int, bin_dir: str) -> list[str]:
    """Every executable `name` in the places pgvault looks, best first, no duplicates."""
    dirs: list[Path] = []
    if bin_dir:
        dirs.append(Path(bin_dir))
    dirs += [Path(d) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs.append(DEBIAN_ROOT / str(major) / "bin")
    if DEBIAN_ROOT.is_dir():
        dirs += sorted(
            (p / "bin" for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()),
            key=lambda p: -int(p.parent.name),
        )
    seen: set[str] = set()
    out = []
    for d in dirs:
        candidate = d / name
        real = os.path.realpath(candidate)
        if real not in seen and os.access(candidate, os.X_OK) and candidate.is_file():
            seen.add(real)
            out.append(str(candidate))
    return out


@functools.cache
def _is_script(path: str) -> bool:
    """A `#!` script (a wrapper), not the program itself."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def _fits(name: str, version: int, major: int) -> bool:
    return version == major or (name in NEWER_OK and version > major)


def versioned_tool(name: str, major: int, bin_dir: str = "", *, search: bool = False) -> str:
    """`name` of exactly PostgreSQL `major` (or newer, for the programs in NEWER_OK);
    PostgresError in one line naming the version needed otherwise. A configured
    `bin_dir` is the only place looked unless `search` (a restore of an older backup
    looks beyond the server's own directory); an empty one: PATH, then the Debian
    /usr/lib/postgresql/<major>/bin layout."""
    wanted = f"{name} {major}{' or newer' if name in NEWER_OK else ''}"
    if bin_dir and not search:
        candidate = Path(bin_dir) / name
        if not os.access(candidate, os.X_OK):
            raise PostgresError(f"{name} not found in postgres.bin_dir {bin_dir}")
        if not _fits(name, tool_major(str(candidate)), major):
            raise PostgresError(
                f"{name} is {tool_version(str(candidate)) or 'of unknown version'} "
                f"({candidate}) but PostgreSQL {major} needs {wanted}: point "
                f"postgres.bin_dir at PostgreSQL {major}'s programs"
            )
        return str(candidate)
    # programs before wrapper scripts (Debian's /usr/bin/pg_dump is a Perl script that
    # execs the real one: ~25 ms more on every run); asked one by one, so the first
    # program of the exact version ends the search without running the others
    found: list[tuple[int, str]] = []
    for program in sorted(_candidates(name, major, bin_dir), key=_is_script):
        version = tool_major(program)
        if version == major:
            return program
        found.append((version, program))
    newer = sorted((v, p) for v, p in found if _fits(name, v, major) and v > major)
    if newer:
        return newer[0][1]
    seen = ", ".join(f"{v} ({p})" for v, p in found) or "none"
    raise PostgresError(
        f"PostgreSQL {major} needs {wanted} (found: {seen}): install PostgreSQL {major}'s"
        " programs or set postgres.bin_dir"
    )


RESTORE_TOOLS = ("postgres", "pg_ctl", "pg_controldata", "pg_verifybackup", "pg_waldump")


def bin_dir_for(major: int, bin_dir: str = "", tool: str = "postgres") -> str:
    """The directory holding PostgreSQL `major`'s programs: where `tool` is of that major
    and every program a restore runs (RESTORE_TOOLS) sits beside it. What a restore of a
    backup taken on that major runs pg_ctl, postgres and pg_verifybackup from."""
    for candidate in _candidates(tool, major, bin_dir):
        if tool_major(candidate) != major:
            continue
        # /usr/local/bin/postgres may be a lone symlink into the real directory
        for folder in (Path(candidate).parent, Path(os.path.realpath(candidate)).parent):
            if all(os.access(folder / t, os.X_OK) for t in RESTORE_TOOLS):
                return str(folder)
    return str(Path(versioned_tool(tool, major, bin_dir, search=True)).parent)


def major_of_version(version: str | None) -> int | None:
    """ "15.20" / "17devel" / "9.6.24" -> 15 / 17 / 9; None when unknown."""
    m = re.match(r"\s*(\d+)", version or "")
    return int(m.group(1)) if m else None


def major_of(version_num: int | str | None) -> int | None:
    """120003 / 170002 -> 12 / 17; None when unknown."""
    try:
        num = int(version_num) if version_num is not None else 0
    except ValueError:
        return None
    return num // 10000 if num >= 100000 else None


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
