"""Daemon plumbing shared by the long-running commands (producer, workers, metrics):
systemd's notify protocol and graceful stop on SIGTERM/SIGINT, as patroni does it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """systemd's notify protocol (Type=notify units); a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def install_stop_handlers(stop: threading.Event, what: str) -> Callable[[], None]:
    """SIGTERM/SIGINT set `stop`: finish the current message, then exit (graceful)."""

    def handler(signum: int, _frame: object) -> None:
        log.info("%s: %s received, finishing current work", what, signal.Signals(signum).name)
        sd_notify("STOPPING=1")
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, prev in old.items():
            signal.signal(sig, prev)

    return restore
