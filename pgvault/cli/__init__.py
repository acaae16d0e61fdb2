"""The `pgvault` command line: parse, load config once, call, print.

Every failure is one line on stderr (`pgvault: error: ...`) and an exit code:
0 ok, 1 failure (or "no" for questions such as `catalog restorable --at`), 2 bad usage
or configuration.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import typer

from pgvault import __version__
from pgvault.config import Settings, load_settings
from pgvault.errors import PgvaultError
from pgvault.log import setup_logging

app = typer.Typer(
    name="pgvault",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="PostgreSQL backups you can prove: WAL, dumps and base backups through a RabbitMQ "
    "pipeline to local disk and S3/R2, checksummed, catalogued and verified by restores.",
)


@dataclass
class State:
    config: Path | None = None
    verbose: int = 0
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def _version(value: bool) -> None:
    if value:
        print(f"pgvault {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Config file (default: $PGVAULT_CONFIG, then /etc/pgvault/pgvault.toml).",
        show_default=False,
    ),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More log output (-vv debug)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    setup_logging(verbose, quiet)
    ctx.obj = State(config=config, verbose=verbose)


def _register() -> None:
    from pgvault.cli import catalog, groups, keys, monitor, pipeline, rebuild, restorable, setup

    setup.register(app)
    pipeline.register(app)
    restorable.register(catalog.app)
    rebuild.register(catalog.app)
    app.add_typer(catalog.app, name="catalog")
    app.add_typer(keys.app, name="keys")
    from pgvault.cli import retention

    app.add_typer(retention.app, name="retention")
    groups.register(app)
    monitor.register(app)


def run(argv: list[str] | None = None) -> int:
    _register()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="pgvault")
    except PgvaultError as exc:
        print(f"pgvault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("pgvault: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("pgvault: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only with -vv
        import logging

        logging.getLogger("pgvault").debug("unexpected error", exc_info=True)
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(
            f"pgvault: error: unexpected {type(exc).__name__}: {text} (run with -vv for "
            "the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(result) if isinstance(result, int) else 0
