"""One service user (DESIGN invariant 14): everything pgvault writes is owned by
`[service] user` (default `postgres`), whoever started the command.

The model is *switching*: a command started as root becomes the service user (groups,
gid, uid; HOME/USER/LOGNAME) as soon as its configuration is loaded, before it writes
anything. Only these keep root, and say so in their help:

- `init`: creates the spool, catalog directory, local store and work directory as root,
  chowns them to the service user, then switches for everything else;
- `restore pitr|logical|table|database` and `drill pitr|logical|table`: they chown a
  restore target to another `--owner` and run PostgreSQL through runuser (root-only
  steps, explicit there).

A command that is neither root nor the service user runs as itself (a monitoring user
may run `check`); doctor and check then test spool, catalog and store access *as the
service user* through a probe subprocess where they can, or report that they could not.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pgvault.errors import ConfigError, PgvaultError

log = logging.getLogger(__name__)

# command words (first one or two) that keep root when started as root
ROOT_COMMANDS = frozenset(
    {
        ("init",),
        ("restore", "pitr"),
        ("restore", "logical"),
        ("restore", "table"),
        ("restore", "database"),
        ("drill", "pitr"),
        ("drill", "logical"),
        ("drill", "table"),
        ("wal-restore",),  # PostgreSQL runs it as its own user anyway
    }
)


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    home: str


def lookup(name: str) -> ServiceUser:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"[service] user {name!r} does not exist on this host (set [service] user)"
        ) from None
    return ServiceUser(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def keeps_root(words: tuple[str, ...]) -> bool:
    return words[:1] in ROOT_COMMANDS or words[:2] in ROOT_COMMANDS


def become(name: str) -> bool:
    """Switch this process to the service user when it runs as root; True if it switched.
    Irreversible (setresuid): nothing this process writes afterwards can be root's."""
    if os.geteuid() != 0:
        return False
    user = lookup(name)
    if user.uid == 0:
        return False
    try:
        os.initgroups(user.name, user.gid)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        raise PgvaultError(
            f"cannot switch from root to the service user {user.name}: {exc.strerror or exc}"
        ) from None
    os.environ.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    os.umask(0o027)
    log.debug("running as the service user %s (uid %d)", user.name, user.uid)
    return True


def chown_to(path: Path, name: str) -> None:
    """As root: give `path` to the service user (init's explicit root-only step)."""
    if os.geteuid() != 0:
        return
    user = lookup(name)
    os.chown(path, user.uid, user.gid)


def is_service_user(name: str) -> bool:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name == name
    except KeyError:
        return False


# -- probing access as the service user -------------------------------------------------

_PROBE = """
import os, sys, uuid
failed = []
for target in sys.argv[1:]:
    kind, _, path = target.partition(":")
    try:
        if kind == "dir":
            probe = os.path.join(path, ".pgvault-probe-" + uuid.uuid4().hex[:8])
            with open(probe, "wb") as fh:
                fh.write(b"probe")
            with open(probe, "rb") as fh:
                assert fh.read() == b"probe"
            os.unlink(probe)
        else:
            with open(path, "rb+") as fh:
                fh.read(1)
    except (OSError, AssertionError) as exc:
        failed.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
print("; ".join(failed))
sys.exit(1 if failed else 0)
"""


def probe_as_service_user(name: str, dirs: list[Path], files: list[Path]) -> str | None:
    """Write+read+delete a probe file in each directory and open each file read-write,
    as the service user. None when all worked, else a one-line reason. Raises
    PgvaultError when the probe cannot be run as that user at all (not root, not it)."""
    argv = [sys.executable, "-c", _PROBE]
    argv += [f"dir:{d}" for d in dirs] + [f"file:{f}" for f in files]
    if is_service_user(name):
        pass
    elif os.geteuid() == 0:
        argv = ["runuser", "-u", name, "--", *argv]
    else:
        raise PgvaultError(
            f"running as uid {os.geteuid()}, neither root nor the service user {name}: "
            "access not tested"
        )
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode == 0:
        return None
    text = proc.stdout.strip() or proc.stderr.strip().splitlines()[-1:] or ["probe failed"]
    return text if isinstance(text, str) else text[0]
