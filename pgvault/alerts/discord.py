"""Discord webhook channel: one JSON POST per notification (stdlib urllib).

The message is a short bold line (`content`) plus an embed: the summary, and fields for
where, value vs threshold and what to do; coloured by severity. `allowed_mentions` is
empty so a summary can never ping @everyone. The webhook URL is a secret (its path holds
the token): it never appears in logs or errors. A 429 whose Retry-After is short (at most
MAX_INLINE_WAIT_S) is waited out and the POST sent once more; a longer one fails the send,
and the worker's retry policy (delay queues) takes over.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from pydantic import SecretStr

from pgvault import __version__
from pgvault.alerts.channels import redact
from pgvault.alerts.message import Notification
from pgvault.errors import ChannelError

COLORS = {
    "critical": 0xD32F2F,
    "warning": 0xF9A825,
    "info": 0x1976D2,
    "resolved": 0x388E3C,
    "digest": 0x7B1FA2,
}
MAX_INLINE_WAIT_S = 5.0
ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵", "resolved": "✅", "digest": "📋"}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload(note: Notification) -> dict[str, Any]:
    """The webhook body, within Discord's limits (content 2000, embed texts 256/4096/1024)."""
    embed: dict[str, Any] = {
        "title": _cut(note.title, 256),
        "description": _cut(note.summary, 4096),
        "color": COLORS.get(note.severity, 0x607D8B),
        "fields": [
            {"name": _cut(name, 256), "value": _cut(value, 1024) or "-", "inline": False}
            for name, value in note.fields[:20]
        ],
        "timestamp": note.at.isoformat(),
    }
    if note.fingerprint:
        embed["footer"] = {"text": _cut(f"pgvault · {note.fingerprint}", 2048)}
    return {
        "username": "pgvault",
        "content": _cut(f"{ICONS.get(note.severity, '')} **{note.title}**".strip(), 2000),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }


class DiscordChannel:
    name = "discord"

    def __init__(self, url: SecretStr, timeout: float = 10.0) -> None:
        self._url = url
        self.timeout = timeout

    def describe(self) -> str:
        return "discord webhook"

    def _fail(self, text: str) -> ChannelError:
        return ChannelError(redact(f"discord webhook: {text}", [self._url.get_secret_value()]))

    def send(self, note: Notification) -> None:
        url = self._url.get_secret_value()
        if not url.startswith(("https://", "http://")):
            raise ChannelError("discord webhook: alerts.discord_webhook_url is not an http(s) URL")
        body = json.dumps(payload(note)).encode()
        wait = self._post(url, body)
        if wait is not None:
            time.sleep(wait)
            wait = self._post(url, body)
            if wait is not None:
                raise self._fail(f"rate limited by Discord twice (retry after {wait:g} s)")

    def _post(self, url: str, body: bytes) -> float | None:
        """POST once: None when accepted, the seconds to wait on a short 429; raises otherwise."""
        request = urllib.request.Request(  # noqa: S310 - scheme checked by send()
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": f"pgvault/{__version__}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked by send()
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                reply = json.loads(exc.read(2000) or b"{}")
                detail = f": {reply.get('message', '')}" if isinstance(reply, dict) else ""
            except (ValueError, OSError):
                reply = None
            if exc.code == 429:
                wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None, reply)
                if wait is not None and wait <= MAX_INLINE_WAIT_S:
                    return wait
                shown = "?" if wait is None else f"{wait:g}"
                raise self._fail(f"rate limited by Discord (retry after {shown} s)") from None
            raise self._fail(f"HTTP {exc.code} {exc.reason}{detail}") from None
        except urllib.error.URLError as exc:
            raise self._fail(f"unreachable ({exc.reason})") from None
        except (OSError, ValueError) as exc:
            raise self._fail(f"{type(exc).__name__}: {exc}") from None


def _retry_after(header: str | None, reply: Any) -> float | None:
    """Seconds to wait: the Retry-After header, else the JSON body's `retry_after`."""
    for value in (header, reply.get("retry_after") if isinstance(reply, dict) else None):
        try:
            if value is not None:
                return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return None
