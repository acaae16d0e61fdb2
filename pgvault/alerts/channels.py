"""Alert channels: the interface, their error, redaction, and building them from config.

A channel's failure is a ChannelError: transient, so the alert worker's retry policy
retries the message with backoff and finally dead-letters it. Channel errors never carry
the webhook URL or the SMTP password: every message passes through `redact`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import quote

from pgvault.alerts.message import Notification
from pgvault.config import AlertSettings

MASK = "********"


class Channel(Protocol):
    name: str

    def describe(self) -> str:
        """Where it delivers, without secrets (for logs)."""

    def send(self, note: Notification) -> None:
        """Deliver one notification or raise ChannelError."""


_WEBHOOK_TOKEN = re.compile(r"(webhooks/)[^\s'\"/]+/[^\s'\"/?]+", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret with a mask: the exact value, a URL's path and query (also as
    repr() or percent-encoded text shows them), and any webhook id/token pair."""
    for raw in secrets:
        secret = raw.strip()
        if not secret:
            continue
        variants = {secret, repr(secret)[1:-1], quote(secret, safe="")}
        if "://" in secret:
            path = secret.split("://", 1)[1].partition("/")[2]
            if path:
                variants |= {path, repr(path)[1:-1], quote(path, safe="/")}
        for variant in sorted(variants, key=len, reverse=True):
            if len(variant) >= 6:
                text = text.replace(variant, MASK)
    return _WEBHOOK_TOKEN.sub(lambda m: m.group(1) + MASK, text)


def build_channels(alerts: AlertSettings) -> list[Channel]:
    """The configured channels: Discord when a webhook URL is set, e-mail when an SMTP
    host and recipients are. None configured: alerts are only logged."""
    channels: list[Channel] = []
    if alerts.discord_webhook_url.get_secret_value():
        from pgvault.alerts.discord import DiscordChannel

        channels.append(DiscordChannel(alerts.discord_webhook_url))
    if alerts.smtp_host and alerts.email_to:
        from pgvault.alerts.mail import MailChannel

        channels.append(MailChannel(alerts))
    return channels
