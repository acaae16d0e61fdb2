"""Alert channels: the interface, their error, redaction, and building them from config.

A channel's failure is a ChannelError: transient, so the alert worker's retry policy
retries the message with backoff and finally dead-letters it. Channel errors never carry
the webhook URL or the SMTP password: every message passes through `redact`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pgvault.alerts.message import Notification
from pgvault.config import AlertSettings
from pgvault.errors import PgvaultError

MASK = "********"


class ChannelError(PgvaultError):
    """A channel could not deliver; worth retrying later."""

    transient = True


class Channel(Protocol):
    name: str

    def describe(self) -> str:
        """Where it delivers, without secrets (for logs)."""

    def send(self, note: Notification) -> None:
        """Deliver one notification or raise ChannelError."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (and, for URLs, their path and query) with a mask."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, MASK)
        if "://" in secret:
            rest = secret.split("://", 1)[1]
            path = rest.partition("/")[2]
            if path:
                text = text.replace(path, MASK)
    return text


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
