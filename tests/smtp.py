"""A real SMTP server on loopback for mail tests (aiosmtpd in its own thread, ephemeral port).

Fixtures: ``smtp_server`` (plain, no AUTH) and ``smtp_auth_server`` (refuses recipients until the
client has authenticated as SMTP_USER / SMTP_PASSWORD). ``running_smtp_server`` starts other
variants (STARTTLS, implicit TLS) with a certificate from ``make_tls_files``.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_USER = "mailer"
SMTP_PASSWORD = "correct horse battery staple"


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    # The login the client authenticated with, or None.
    authenticated_as: str | None


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[ReceivedMessage] = field(default_factory=list)

    async def wait_for(self, n: int = 1, timeout: float = 5.0) -> list[ReceivedMessage]:  # noqa: ASYNC109
        """The first n messages, once they have arrived (delivery may happen in a background task)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < n:
            if loop.time() > deadline:
                raise AssertionError(f"expected {n} message(s) within {timeout}s, got {len(self.messages)}")
            await asyncio.sleep(0.01)
        return self.messages[:n]


class _CollectingHandler:
    """aiosmtpd handler hooks; they run on the server's own thread and event loop."""

    def __init__(self, server: SmtpServer, require_auth: bool) -> None:
        self.server = server
        self.require_auth = require_auth

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        # Refusing at RCPT rather than with aiosmtpd's auth_required, which warns (an error here)
        # whenever AUTH is required without TLS.
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.server.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=cast(EmailMessage, parsed),
                authenticated_as=login if session.authenticated else None,
            )
        )
        return "250 Message accepted for delivery"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _LoopbackController(Controller):
    """Controller on port 0: reads back the port the OS chose before its start-up probe connects."""

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts only this certificate, and still checks that it names 127.0.0.1."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_tls_files(directory: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "smtp-cert.pem", directory / "smtp-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


@contextmanager
def running_smtp_server(
    *,
    require_auth: bool = False,
    tls: Literal["starttls", "implicit"] | None = None,
    tls_files: TlsFiles | None = None,
    port: int = 0,
) -> Iterator[SmtpServer]:
    """An SMTP server on loopback, on ``port`` (0: one the OS chooses); stopped on exit, so a test
    can take a mail server away and bring it back on the same port."""
    server = SmtpServer(host="127.0.0.1", port=port)
    options: dict[str, Any] = {
        # A fixed name: otherwise aiosmtpd calls socket.getfqdn(), a DNS look-up, per connection.
        "server_hostname": "smtp.test",
        "authenticator": _authenticator,
        "auth_require_tls": False,
    }
    if tls is not None:
        assert tls_files is not None, "TLS needs a certificate (make_tls_files)"
        if tls == "starttls":
            options.update(tls_context=tls_files.server_context(), require_starttls=True)
        else:
            options["ssl_context"] = tls_files.server_context()
    handler = _CollectingHandler(server, require_auth)
    controller = _LoopbackController(handler, hostname=server.host, port=port, **options)
    controller.start()
    server.port = controller.port
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


@pytest.fixture
def smtp_auth_server() -> Iterator[SmtpServer]:
    with running_smtp_server(require_auth=True) as server:
        yield server
