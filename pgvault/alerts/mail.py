"""SMTP e-mail channel (stdlib smtplib): implicit TLS when alerts.smtp_ssl (submissions,
port 465), else STARTTLS when alerts.smtp_starttls (the default; the server must offer it,
pgvault never falls back to plain text); AUTH when alerts.smtp_user is set, with the
password from PGVAULT_ALERTS__SMTP_PASSWORD. Certificates are always verified."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from pgvault.alerts.channels import redact
from pgvault.alerts.message import Notification
from pgvault.config import AlertSettings
from pgvault.errors import ChannelError

log = logging.getLogger(__name__)


class MailChannel:
    name = "email"

    def __init__(self, alerts: AlertSettings, timeout: float = 20.0) -> None:
        self.host = alerts.smtp_host
        self.port = alerts.smtp_port
        self.implicit_tls = alerts.smtp_ssl
        self.starttls = alerts.smtp_starttls and not alerts.smtp_ssl
        self.user = alerts.smtp_user
        self._password = alerts.smtp_password
        self.sender = alerts.email_from or f"pgvault@{socket.getfqdn()}"
        self.recipients = list(alerts.email_to)
        self.timeout = timeout

    def describe(self) -> str:
        tls = "TLS" if self.implicit_tls else "STARTTLS" if self.starttls else "plain"
        return f"e-mail via {self.host}:{self.port} ({tls}) to {len(self.recipients)} recipient(s)"

    def message(self, note: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[pgvault] {note.title}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain="pgvault.invalid")
        msg["X-Pgvault-Severity"] = note.severity
        if note.fingerprint:
            msg["X-Pgvault-Fingerprint"] = note.fingerprint
        msg.set_content(note.text())
        return msg

    def _fail(self, text: str) -> ChannelError:
        where = f"e-mail via {self.host}:{self.port}"
        return ChannelError(redact(f"{where}: {text}", [self._password.get_secret_value()]))

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                timeout=self.timeout,
                context=ssl.create_default_context(),
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def send(self, note: Notification) -> None:
        msg = self.message(note)
        try:
            with self._connect() as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, self._password.get_secret_value())
                refused = smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise self._fail(f"login as {self.user} refused ({exc.smtp_code})") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise self._fail(f"server does not support {exc}") from None
        except smtplib.SMTPRecipientsRefused:
            raise self._fail("every recipient was refused") from None
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            raise self._fail(f"{exc.smtp_code} {' '.join(text.split())[:200]}") from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise self._fail(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
        if refused:  # the others have it; retrying would send it to them again
            log.warning(
                "e-mail alert not accepted for %s (the other recipients got it)",
                ", ".join(sorted(refused)),
                extra={"artifact": f"alert/{note.fingerprint or 'digest'}"},
            )
