"""Console entry point with a fast path for PostgreSQL's archive/restore commands.

`pgvault wal-archive` runs once per WAL segment, so it is dispatched here before typer,
rich or pydantic are imported (DESIGN invariant 2); `wal-restore` too, so that PostgreSQL
always gets its exit codes (0 / 1 / 254) and never typer's usage error 2, which it would
read as "file not found". The plain forms of `backup logical` skip typer and rich too
(pgvault.producers.logical_cmd). Everything else goes to pgvault.cli.
"""

from __future__ import annotations

import sys
from typing import NoReturn

FAST_COMMANDS = ("wal-archive", "wal-restore")
_QUIET_FLAGS = ("-q", "--quiet", "-v", "-vv", "-vvv", "--verbose")


def _split_globals(args: list[str]) -> tuple[str | None, list[str]] | None:
    """Take leading global options off; None when one is not understood here."""
    config = None
    rest = list(args)
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt in ("--config", "-c") and rest:
            config = rest.pop(0)
        elif opt.startswith("--config="):
            config = opt.split("=", 1)[1]
        elif opt in _QUIET_FLAGS:
            continue  # logging flags: the fast commands log nothing but errors
        else:
            return None
    return config, rest


def main() -> int:
    split = _split_globals(sys.argv[1:])
    if split is not None:
        config, rest = split
        if rest[:2] == ["backup", "logical"]:
            # short on small databases, where typer's and rich's import was a large
            # part of the command's time: the plain forms run without them
            from pgvault.producers import logical_cmd

            code = logical_cmd.main(sys.argv[1:])
            if code is not None:
                _exit_now(code)
        if rest and rest[0] in FAST_COMMANDS and not {"-h", "--help"} & set(rest):
            if rest[0] == "wal-archive":
                from pgvault.producers import wal_archive

                return wal_archive.main(rest[1:], config)
            from pgvault.restore import wal_restore

            return wal_restore.main(rest[1:], config)
    from pgvault.cli import run

    code = run()
    if split is not None and split[1][:2] == ["restore", "logical"]:
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """End a finished short command without the interpreter's teardown: freeing every
    module's objects (pydantic's schemas, psycopg, ...) took ~70 ms, a fifth of a small
    database's whole backup. Nothing is left to it: the command has closed its catalog,
    connections and files; logging and the standard streams are flushed here."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
