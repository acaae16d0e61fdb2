"""The `pgvault` command line: parse, load config once, call, print.

Every failure is one line on stderr (`pgvault: error: ...`) and an exit code:
0 ok, 1 failure (or "no" for questions such as `catalog restorable --at`), 2 bad usage
or configuration.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer
import typer.main

from pgvault import __version__
from pgvault.config import Settings, load_settings
from pgvault.errors import PgvaultError
from pgvault.log import setup_logging

# long-running commands whose log is their output (journald); the others print a summary
# and log only warnings and errors unless -v
DAEMONS = ("producer", "worker", "metrics")

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
        """The config, loaded once; a command started as root becomes the service user
        right here, before it writes anything (pgvault.identity), unless it is one of the
        few that keep root (init switches itself after its root-only steps)."""
        if self._settings is None:
            from pgvault import identity

            self._settings = load_settings(self.config)
            if not identity.keeps_root(tuple(_COMMAND_WORDS)):
                identity.become(self._settings.service.user)
        return self._settings


_COMMAND_WORDS: list[str] = []  # set by run(): which command this process runs
_GLOBAL_WITH_VALUE = ("--config", "-c")


def command_words(argv: list[str]) -> tuple[str, ...]:
    """The first two command words of argv (`backup logical`), global options skipped."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _GLOBAL_WITH_VALUE and not words:
            skip = True
            continue
        if arg.startswith("-"):
            continue
        words.append(arg)
        if len(words) == 2:
            break
    return tuple(words)


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
    setup_logging(verbose, quiet, daemon=ctx.invoked_subcommand in DAEMONS)
    ctx.obj = State(config=config, verbose=verbose)


GROUPS = ("backup", "restore", "drill")  # pgvault.cli.groups


def _register(words: tuple[str, ...] = ()) -> None:
    """Build the command tree. A command of the backup/restore/drill groups needs only
    those (the other modules cost a short command like `backup logical` ~30 ms)."""
    if len(words) == 2 and words[0] in GROUPS:
        from pgvault.cli import groups

        groups.register(app)
        return
    from pgvault.cli import (
        audit,
        catalog,
        groups,
        keys,
        monitor,
        pipeline,
        rebuild,
        restorable,
        setup,
    )

    setup.register(app)
    pipeline.register(app)
    restorable.register(catalog.app)
    rebuild.register(catalog.app)
    audit.register(catalog.app)
    app.add_typer(catalog.app, name="catalog")
    app.add_typer(keys.app, name="keys")
    from pgvault.cli import retention

    app.add_typer(retention.app, name="retention")
    groups.register(app)
    monitor.register(app)
    from pgvault.cli import status

    status.register(app)


def _kind(exc: BaseException) -> str | None:
    """Which click exception this is. typer vendors its own copy of click (typer._click)
    in recent releases, so the classes are recognised by name, whichever copy raised."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    for kind in ("UsageError", "Exit", "Abort", "ClickException"):
        if kind in names:
            return kind
    return None


NAGIOS_UNKNOWN = 3


def usage_message(exc: Exception) -> tuple[str, str]:
    """(command path, one-line message) of a click usage error, naming the option as it is
    typed on the command line, with click's "did you mean" where it has one."""
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", None) or "pgvault"
    param = getattr(exc, "param", None)
    opts = [o for o in getattr(param, "opts", []) or [] if o.startswith("-")]
    if type(exc).__name__ == "MissingParameter" and opts:
        text = f"missing option {opts[0]}"
    else:
        fmt = getattr(exc, "format_message", None)
        text = " ".join((fmt() if callable(fmt) else str(exc)).split())
        text = re.sub(
            r"\s*\((?:Possible options?:|did you mean)\s*(.*?)\??\)", r" (did you mean \1?)", text
        )
        text = re.sub(r"\.?\s*Did you mean (.*?)\??$", r" (did you mean \1?)", text)
        text = re.sub(r"\.(\s|$)", r"\1", text).strip()
    return where, text[:1].lower() + text[1:]


def polish_help(command: object) -> None:
    """Help that reads well: a group lists each command's whole first sentence (click
    cuts it at the terminal width otherwise), and repeatable options show a name, not
    typer's `<list[str]>`."""
    for param in getattr(command, "params", []):
        desc = getattr(param, "type_descriptor", None)
        if desc is not None and desc.is_list and param.metavar is None:
            param.metavar = str(param.name).upper()
    help_text = getattr(command, "help", None)
    if help_text and not getattr(command, "short_help", None):
        first = " ".join(help_text.strip().split("\n\n", 1)[0].split())
        sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z`])", first, maxsplit=1)[0]
        command.short_help = sentence  # type: ignore[attr-defined]
    for sub in (getattr(command, "commands", None) or {}).values():
        polish_help(sub)


def run(argv: list[str] | None = None) -> int:
    _COMMAND_WORDS[:] = command_words(sys.argv[1:] if argv is None else argv)
    _register(tuple(_COMMAND_WORDS))
    try:
        command = typer.main.get_command(app)
        polish_help(command)
        result = command.main(args=argv, standalone_mode=False, prog_name="pgvault")
    except PgvaultError as exc:
        print(f"pgvault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        kind = _kind(exc)
        if kind is None:
            return _unexpected(exc)
        if kind == "Exit":
            return int(getattr(exc, "exit_code", 0))
        if kind == "Abort":
            print("pgvault: aborted", file=sys.stderr)
            return 130
        where, text = usage_message(exc)
        print(f"{where}: error: {text} (see `{where} --help`)", file=sys.stderr)
        if kind == "UsageError":
            # Nagios reads 1 as WARNING and 2 as CRITICAL: a typo in a check is UNKNOWN
            return NAGIOS_UNKNOWN if where.split()[1:2] == ["check"] else 2
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        print("pgvault: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0


def _unexpected(exc: Exception) -> int:
    """A bug: still one line, the traceback only with -vv."""
    import logging

    logging.getLogger("pgvault").debug("unexpected error", exc_info=True)
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(
        f"pgvault: error: unexpected {type(exc).__name__}: {text} (run with -vv for the traceback)",
        file=sys.stderr,
    )
    return 1
