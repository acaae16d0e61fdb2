"""Real servers on localhost standing in for Discord (HTTP) and a mail relay (aiosmtpd)."""

from __future__ import annotations

import email
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.pgcluster import free_port

WEBHOOK_TOKEN = "s3cr3t-w3bh00k-t0ken"


class FakeDiscord:
    """Accepts webhook POSTs like Discord (204), or fails the next `fail_next` with 500, or
    answers the next ones with 429 and the Retry-After seconds queued in `rate_limits`."""

    def __init__(self) -> None:
        self.attempts: list[dict[str, Any]] = []  # every POST, accepted or not
        self.posts: list[dict[str, Any]] = []  # accepted ones (JSON bodies)
        self.paths: list[str] = []
        self.fail_next = 0
        self.rate_limits: list[float] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.attempts.append(body)
                    fake.paths.append(self.path)
                    limit = fake.rate_limits.pop(0) if fake.rate_limits else None
                    failing = limit is None and fake.fail_next > 0
                    if limit is not None:
                        pass
                    elif failing:
                        fake.fail_next -= 1
                    else:
                        fake.posts.append(body)
                if limit is not None:
                    data = json.dumps({"message": "You are being rate limited.",
                                       "retry_after": limit, "global": False}).encode()  # fmt: skip
                    self.send_response(429)
                    self.send_header("Retry-After", f"{limit:g}")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif failing:
                    data = json.dumps({"message": "internal trouble", "code": 0}).encode()
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/42/{WEBHOOK_TOKEN}"

    def texts(self) -> list[str]:
        """Each accepted POST as one searchable string."""
        return [json.dumps(p, ensure_ascii=False) for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        return payload.decode() if isinstance(payload, bytes) else str(payload)


@dataclass
class FakeSMTP:
    port: int
    mails: list[Mail] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(
            Mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                email.message_from_bytes(envelope.content),
            )
        )
        return "250 OK"

    def close(self) -> None:
        if self.controller is not None:
            self.controller.stop()


def start_smtp(
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
) -> FakeSMTP:
    """An SMTP server; with `password`, AUTH (user `alerts`) is required; with a TLS
    context, STARTTLS is required before anything else (or, with `implicit_tls`, TLS from
    the first byte, as on port 465)."""
    fake = FakeSMTP(free_port())
    kwargs: dict[str, Any] = {}
    if password is not None:

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                b"alerts",
                password.encode(),
            )
            if isinstance(data, LoginPassword):
                fake.logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticator, auth_required=True)
        kwargs["auth_require_tls"] = tls_context is not None and not implicit_tls
    if tls_context is not None and implicit_tls:
        kwargs["ssl_context"] = tls_context
    elif tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    fake.controller = Controller(fake, hostname="127.0.0.1", port=fake.port, **kwargs)
    fake.controller.start()
    return fake


def self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1/localhost and a server context using it."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return cert, ctx


@pytest.fixture(name="discord")
def discord_fixture() -> Iterator[FakeDiscord]:
    fake = FakeDiscord()
    yield fake
    fake.close()


@pytest.fixture(name="smtp")
def smtp_fixture() -> Iterator[FakeSMTP]:
    fake = start_smtp()
    yield fake
    fake.close()
