"""`pgvault backup logical`: the command's work and output, and a way in without typer.

`backup_databases` is what the typer command (pgvault.cli.logical) runs. `main` runs the
same for the plain forms of the command line (`[-c CONFIG] [-v|-q] backup logical
[--db NAME]... [--json]`), dispatched by pgvault.__main__ before typer, rich and the
other commands' modules are imported: on a small database their import was a large part
of the command's fixed cost. Anything else (--help, a typo, an option it does not know)
answers None here and goes through typer, which owns usage and its errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pgvault.units import human_bytes

if TYPE_CHECKING:
    from pgvault.broker.base import Broker
    from pgvault.config import Settings

_VERBOSE = {"-v": 1, "--verbose": 1, "-vv": 2, "-vvv": 3}


@dataclass
class Invocation:
    config: Path | None = None
    verbose: int = 0
    quiet: bool = False
    dbs: list[str] = field(default_factory=list)
    json_out: bool = False


def parse(argv: Sequence[str]) -> Invocation | None:
    """The plain forms only; None for anything typer should see."""
    inv = Invocation()
    args = list(argv)
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("--config", "-c") and args and not args[0].startswith("-"):
            inv.config = Path(args.pop(0))
        elif opt.startswith("--config="):
            inv.config = Path(opt.split("=", 1)[1])
        elif opt in _VERBOSE:
            inv.verbose += _VERBOSE[opt]
        elif opt in ("-q", "--quiet"):
            inv.quiet = True
        else:
            return None
    if args[:2] != ["backup", "logical"]:
        return None
    rest = args[2:]
    while rest:
        opt = rest.pop(0)
        if opt == "--json":
            inv.json_out = True
        elif opt == "--db" and rest and not rest[0].startswith("-"):
            inv.dbs.append(rest.pop(0))
        elif opt.startswith("--db=") and len(opt) > 5:
            inv.dbs.append(opt[5:])
        else:
            return None
    return inv


def backup_databases(settings: Settings, given: Sequence[str], json_out: bool) -> int:
    """Back up the given databases (default: postgres.databases), print the summary or
    the JSON, one error line per failed database; the exit code."""
    from pgvault.catalog import open_catalog
    from pgvault.errors import CatalogError, UsageError
    from pgvault.producers.logical import run_backups

    dbs = list(dict.fromkeys(given or settings.postgres.databases))
    if not dbs:
        raise UsageError("no database given: pass --db NAME or set postgres.databases")

    def broker() -> Broker:  # imported and opened only when an alert must go out
        from pgvault.broker import open_broker

        return open_broker(settings)

    try:
        catalog = open_catalog(settings)
    except CatalogError as exc:  # the dumps matter more than the record of them
        print(f"pgvault: warning: {exc}; backing up without recording the runs", file=sys.stderr)
        catalog = None
    try:
        outcomes = run_backups(settings, dbs, catalog, broker)
    finally:
        if catalog is not None:
            catalog.close()
    for o in outcomes:
        if not o.ok:
            print(f"pgvault: error: backup of {o.db} failed: {o.error}", file=sys.stderr)
    ok = all(o.ok for o in outcomes)
    if json_out:
        data = {"cluster": settings.cluster, "ok": ok, "backups": [o.as_json() for o in outcomes]}
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        for o in outcomes:
            if o.ok:
                print(
                    f"{o.db}: {o.backup_id}  {human_bytes(o.size)}, {o.tables} tables, "
                    f"{o.rows} rows, {o.duration_s:.1f}s -> {o.path}"
                )
    sys.stdout.flush()
    return 0 if ok else 1


def main(argv: Sequence[str]) -> int | None:
    """Run a plain `backup logical` command line; None when typer should handle it."""
    inv = parse(argv)
    if inv is None:
        return None
    import logging

    from pgvault import identity
    from pgvault.config import load_settings
    from pgvault.errors import PgvaultError
    from pgvault.log import setup_logging

    setup_logging(inv.verbose, inv.quiet, daemon=False)
    try:
        settings = load_settings(inv.config)
        if not identity.keeps_root(("backup", "logical")):
            identity.become(settings.service.user)
        return backup_databases(settings, inv.dbs, inv.json_out)
    except PgvaultError as exc:
        print(f"pgvault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pgvault: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback with -vv (as pgvault.cli)
        logging.getLogger("pgvault").debug("unexpected error", exc_info=True)
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(
            f"pgvault: error: unexpected {type(exc).__name__}: {text} "
            "(run with -vv for the traceback)",
            file=sys.stderr,
        )
        return 1
