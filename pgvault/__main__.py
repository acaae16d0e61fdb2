"""Console entry point with a fast path for PostgreSQL's archive/restore commands.

`pgvault wal-archive` runs once per WAL segment, so it is dispatched here before typer,
rich or pydantic are imported (DESIGN invariant 2). Everything else goes to pgvault.cli.
"""

from __future__ import annotations

import sys

FAST_COMMANDS = ("wal-archive", "wal-restore")


def _split_config(args: list[str]) -> tuple[str | None, list[str]]:
    """Take a leading `--config FILE` / `--config=FILE` off the argument list."""
    config = None
    rest = list(args)
    while rest and rest[0].startswith("--config"):
        opt = rest.pop(0)
        if opt == "--config" and rest:
            config = rest.pop(0)
        elif opt.startswith("--config="):
            config = opt.split("=", 1)[1]
        else:
            return None, list(args)
    return config, rest


def main() -> int:
    config, rest = _split_config(sys.argv[1:])
    if rest and rest[0] in FAST_COMMANDS and not {"-h", "--help"} & set(rest):
        if rest[0] == "wal-archive":
            from pgvault.producers import wal_archive

            return wal_archive.main(rest[1:], config)
        from pgvault.restore import wal_restore

        return wal_restore.main(rest[1:], config)
    from pgvault.cli import run

    return run()


if __name__ == "__main__":
    sys.exit(main())
