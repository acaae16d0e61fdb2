"""restore_command's fast path: serve a prefetched, verified segment with one rename.

`pgvault restore pitr` writes

    restore_command = 'mv -f pg_wal/.pgvault-prefetch/%f.ready %p 2>/dev/null ||
        exec <venv python> -S -P <this file> [--config FILE] [--from-store] %f %p'

The `mv` serves what the prefetcher published for the rename-only path (walqueue.READY);
this file runs for the rest.

`-S` skips site (and every .pth file), `-P` keeps this file's directory off sys.path, and
this module imports only the stdlib-only queue and tablespace-guard modules: the
interpreter starts in a few milliseconds, not the ~50-100 ms of the full application.

A served call: take NAME from pg_wal/.pgvault-prefetch (walqueue.take: the marker written
after verification must still match the file), or, while the prefetcher is not up yet,
the verified spool copy; tell the prefetcher where replay is, make sure it runs, and
apply the tablespace guard (invariant 11) exactly as `pgvault wal-restore` does. A name
the running prefetcher found nowhere in the last ABSENT_FRESH seconds is answered 1 (the
end of WAL, a timeline history that does not exist). Anything else (in the store only, a
marker that does not match, a guard that needs a segment not yet prefetched) replaces this
process with `pgvault wal-restore` (os.execv), which fetches from the spool or the store,
verified, and keeps the exit codes PostgreSQL relies on (0 / 1 / 254).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing itself costs milliseconds at every call
    from typing import NoReturn

if __name__ == "__main__" and __package__ in (None, ""):  # run as a script under -S -P
    _ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, _ROOT)
    # the full path and the prefetcher (started from here) import pgvault from here too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p
    )

from pgvault.restore import walqueue  # noqa: E402 - after the sys.path set-up above

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ABORT = 254
_HEX = frozenset("0123456789ABCDEF")


class _Miss(Exception):
    """The fast path cannot finish this call: the full wal-restore will."""


def _parse(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    config = None
    use_spool = True
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt in ("--config", "-c") and rest:
            config = rest.pop(0)
        elif opt.startswith("--config="):
            config = opt.split("=", 1)[1]
        elif opt == "--from-store":
            use_spool = False
        else:  # not ours: the full path reads it (and reports a usage error)
            return config, use_spool, [opt, *rest]
    return config, use_spool, rest


def full_path(config: str | None, use_spool: bool, rest: list[str]) -> NoReturn:
    """Replace this process with the full `pgvault wal-restore` (same arguments)."""
    argv = [sys.executable, "-m", "pgvault"]
    if config:
        argv += ["--config", config]
    argv.append("wal-restore")
    if not use_spool:
        argv.append("--from-store")
    argv += rest
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - the same interpreter, our own argv


def _guard(name: str, dest: str, qdir: str) -> int:
    """Invariant 11 on the served segment; EXIT_OK or EXIT_ABORT (dest removed)."""
    datadir = os.path.dirname(os.path.dirname(os.path.abspath(dest)))
    if not os.path.exists(os.path.join(datadir, "pgvault_tablespaces.json")):
        return EXIT_OK  # not a pgvault restore's data directory (tblspc_guard.load returns None)
    from pgvault.restore import tblspc_guard

    def fetch_next(nxt: str) -> str | None:
        path = walqueue.valid(qdir, nxt)
        if path is None:
            raise _Miss(nxt)
        return path

    try:
        lines = tblspc_guard.apply(datadir, name, dest, fetch_next)
    except tblspc_guard.GuardError as exc:
        os.unlink(dest)
        return _abort(f"{name}: cannot map a tablespace into the restored cluster: {exc}")
    for line in lines:
        print(f"pgvault wal-restore: {name}: {line}", file=sys.stderr)
    return EXIT_OK


def _abort(msg: str) -> int:
    print(f"pgvault wal-restore: {msg}", file=sys.stderr)
    return EXIT_ABORT


def _from_spool(name: str, dest: str, config: str | None) -> bool:
    """The verified spool copy, in this process (the prefetcher is not up yet)."""
    from pgvault.lightconf import load_light
    from pgvault.restore.walspool import from_spool

    return from_spool(load_light(config).spool_dir, name, dest) is True


def serve(name: str, dest: str, config: str | None, use_spool: bool) -> int | None:
    """The exit code when NAME was handled here; None: the full path must handle it."""
    segment = len(name) == 24 and _HEX.issuperset(name)
    history = len(name) == 16 and name.endswith(".history") and _HEX.issuperset(name[:8])
    if not (segment or history):
        return None  # .partial, .backup: rare, the full path
    if name == "00000001.history":
        return EXIT_NOT_FOUND  # timeline 1 has no history: PostgreSQL never writes one
    qdir = walqueue.queue_dir(dest)
    how = "queue"
    if segment and walqueue.take_ready(qdir, name, dest):
        how = ""  # published after restore_command's mv had looked: the prefetcher notes it
    elif not walqueue.take(qdir, name, dest):
        if walqueue.absent(qdir, name):
            return EXIT_NOT_FOUND  # the running prefetcher found it nowhere, just now
        if not (segment and use_spool and _from_spool(name, dest, config)):
            return None
        os.makedirs(qdir, exist_ok=True)
        how = "spool"
    if not segment:
        return EXIT_OK  # a history file: the guard has nothing to do (tblspc_guard.apply)
    if how:
        walqueue.note_served(qdir, name, how)
    walqueue.set_want(qdir, name, os.stat(dest).st_size)
    walqueue.ensure_prefetcher(qdir, config, use_spool=use_spool)
    try:
        return _guard(name, dest, qdir)
    except _Miss:
        return None  # the full path fetches NAME again (verified) and guards it


def main(argv: list[str]) -> int:
    config, use_spool, rest = _parse(argv)
    if len(rest) == 2:
        try:
            code = serve(rest[0], rest[1], config, use_spool)
        except Exception as exc:  # bad config, unreadable spool: abort, never "not found"
            return _abort(f"{rest[0]}: {exc}")
        if code is not None:
            return code
    return full_path(config, use_spool, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
