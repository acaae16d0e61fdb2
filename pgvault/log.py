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


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """stderr logging; no timestamps under systemd (journald adds them)."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    under_journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    fmt = "%(levelname)s %(name)s [%(artifact)s] %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(_ArtifactDefault())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pika", "botocore", "boto3", "urllib3", "s3transfer", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 3 else logging.DEBUG)
