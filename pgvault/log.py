"""Logging set-up: every line names the artifact it is about (or "-")."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any


class _ArtifactDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "artifact"):
            record.artifact = "-"
        return True


class ArtifactLogger(logging.LoggerAdapter[logging.Logger]):
    """`ArtifactLogger(log, "wal/000000010000000000000003").info("uploaded")`."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def for_artifact(logger: logging.Logger, artifact: str) -> ArtifactLogger:
    return ArtifactLogger(logger, {"artifact": artifact})


class _OneLine(logging.Formatter):
    """Every record is one line: tracebacks only with -vv (the exception's own one-line
    text is kept), embedded newlines folded."""

    def __init__(self, fmt: str, tracebacks: bool) -> None:
        super().__init__(fmt)
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks:
            return super().format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        exc = record.exc_info[1] if record.exc_info else None
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if exc is not None and str(exc) and str(exc) not in text:
            text = f"{text}: {type(exc).__name__}: {exc}"
        return " ".join(text.split("\n"))


# Library loggers: pika logs every failed connection attempt as several ERROR lines with
# tracebacks; the broker adapter reports each state change (down, retrying, back) itself.
QUIET_LIBRARIES = ("pika", "botocore", "boto3", "urllib3", "s3transfer", "watchdog")


def setup_logging(verbose: int = 0, quiet: bool = False, *, daemon: bool = True) -> None:
    """stderr logging; no timestamps under systemd (journald adds them). One line per
    record; library chatter (pika's connection errors) only with -vv. Daemons (producer,
    workers, metrics) log their work at INFO; an interactive command prints its own
    summary on stdout, so it logs only warnings and errors unless -v asks for more."""
    if quiet:
        level = logging.WARNING
    elif verbose > 1:
        level = logging.DEBUG
    elif verbose == 1 or daemon:
        level = logging.INFO
    else:
        level = logging.WARNING
    under_journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    fmt = "%(levelname)s %(name)s [%(artifact)s] %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine(fmt, tracebacks=verbose > 1))
    handler.addFilter(_ArtifactDefault())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    library_level = (
        logging.CRITICAL + 1 if verbose < 2 else logging.WARNING if verbose < 3 else logging.DEBUG
    )
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(library_level)
