"""Outgoing email: compose RFC 5322 messages, render them from templates, and deliver them.

Two delivery backends behind one interface: ``OutboxMailer`` writes each message as an ``.eml`` file
(development, and tests that read what was "sent"), ``SmtpMailer`` hands it to an SMTP server.
A mailer is created once per process (``build_mailer``) and closed at shutdown. Nothing calls it
from a request: messages are queued in the durable outbox (idp.outbox, not to be confused with the
``.eml`` directory of ``OutboxMailer``) as ``OutgoingEmail.to_payload`` and sent by its worker.

Mail carries credentials (verification and reset links) and personal data (the address), so
nothing here logs a body, a link, a subject or a full address: log lines name the template and
the recipient's domain only, and ``MailError`` messages name the exception type only.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiosmtplib
import jinja2

from idp.security.hosts import is_loopback_host

if TYPE_CHECKING:
    from idp.config import Settings

log = logging.getLogger("idp.mail")

TEMPLATE_DIR = Path(__file__).parent / "templates" / "email"


class MailError(Exception):
    """Delivery failed. The message is safe to log: no credentials, no address, no body."""


def _single_address(value: str, field: str) -> Address:
    """Parse a header value that must name exactly one mailbox with a domain."""
    if "\r" in value or "\n" in value:
        # A CR or LF would let the value start a header of its own (Bcc:, a second body…).
        raise ValueError(f"{field}: must not contain CR or LF")
    invalid = ValueError(f"{field}: must be exactly one address with a domain")
    try:
        # Parsed as a To: header whatever the field, so display names and quoting follow RFC 5322.
        header: Any = policy.default.header_factory("To", value)
    except (HeaderParseError, ValueError, IndexError):  # the parser's ways of giving up on broken input
        raise invalid from None
    addresses: tuple[Address, ...] = header.addresses
    # Exactly one: a comma in a user-supplied address must not add a second recipient. Any parse
    # defect means the parser guessed, and a guessed recipient is not one to send a link to.
    if header.defects or len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
        raise invalid
    return addresses[0]


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None = None
    # The template it was rendered from, if any: what log lines say instead of the subject.
    template: str | None = None

    def __post_init__(self) -> None:
        _single_address(self.to, "To")
        if "\r" in self.subject or "\n" in self.subject:
            raise ValueError("Subject: must not contain CR or LF")

    def to_payload(self) -> dict[str, str | None]:
        """The message as the outbox keeps it (sealed at rest: it holds the address and links)."""
        return {"to": self.to, "subject": self.subject, "text": self.text, "html": self.html, "template": self.template}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> OutgoingEmail:
        """The message ``to_payload`` kept; TypeError or ValueError (its checks) when it is not one."""
        to, subject, text = payload["to"], payload["subject"], payload["text"]
        html, template = payload.get("html"), payload.get("template")
        if not all(isinstance(value, str) for value in (to, subject, text)) or not all(
            value is None or isinstance(value, str) for value in (html, template)
        ):
            raise TypeError("not a queued message")
        return cls(to=to, subject=subject, text=text, html=html, template=template)

    @property
    def recipient(self) -> str:
        """The bare addr-spec, for the SMTP envelope."""
        return _single_address(self.to, "To").addr_spec

    @property
    def recipient_domain(self) -> str:
        """All that is logged about the recipient (the full address is personal data)."""
        return _single_address(self.to, "To").domain.lower()


class Mailer(abc.ABC):
    def __init__(self, sender: str) -> None:
        # Checked here so a bad mail.sender stops start-up rather than the first registration.
        self._sender_address = _single_address(sender, "mail.sender")
        self.sender = sender

    @abc.abstractmethod
    async def send(self, message: OutgoingEmail) -> None:
        """Deliver one message or raise MailError."""

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing open
        """Release anything held open; the default backends open a connection per message."""

    def compose(self, message: OutgoingEmail) -> EmailMessage:
        email = EmailMessage(policy=policy.default)
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = format_datetime(datetime.now(UTC))
        # With an explicit domain make_msgid doesn't call socket.getfqdn(), a blocking DNS look-up.
        email["Message-ID"] = make_msgid(domain=self._sender_address.domain)
        # RFC 3834 §5: tells auto-responders (vacation replies) not to answer.
        email["Auto-Submitted"] = "auto-generated"
        email.set_content(message.text)
        if message.html is not None:
            email.add_alternative(message.html, subtype="html")
        return email

    @staticmethod
    def _log_fields(message: OutgoingEmail) -> dict[str, Any]:
        return {"template": message.template, "recipient_domain": message.recipient_domain}


class OutboxMailer(Mailer):
    """Writes one ``.eml`` file per message into a private directory instead of sending it."""

    def __init__(self, directory: str | os.PathLike[str], sender: str) -> None:
        super().__init__(sender)
        self.directory = Path(directory)

    async def send(self, message: OutgoingEmail) -> None:
        data = self.compose(message).as_bytes(policy=policy.SMTP)
        try:
            path = await asyncio.to_thread(self._write, data)
        except OSError as exc:
            raise MailError(f"outbox write failed: {type(exc).__name__}") from None
        log.info("email written to outbox", extra={"path": str(path), **self._log_fields(message)})

    def _write(self, data: bytes) -> Path:
        # 0700/0600: the files hold live verification and reset links.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{secrets.token_hex(4)}.eml"
        # Written under a hidden name and renamed, so a reader globbing *.eml never sees half a file.
        partial = self.directory / f".{name}.part"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            final = self.directory / name
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return final


class SmtpMailer(Mailer):
    """Sends through an SMTP server, one connection per message (no idle connection to go stale)."""

    def __init__(
        self,
        sender: str,
        *,
        host: str,
        port: int,
        security: Literal["starttls", "tls", "none"] = "starttls",
        username: str = "",
        password: str | None = None,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(sender)
        if security not in ("starttls", "tls", "none"):
            raise ValueError("mail.smtp_security: must be starttls, tls or none")
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self._tls_context = tls_context
        # aiosmtplib looks up our FQDN for EHLO on every connection; remember it after the first.
        self._local_hostname: str | None = None
        if security == "none" and not is_loopback_host(host):
            log.warning(
                "mail.smtp_security is none for a remote host: messages and any SMTP password travel unencrypted",
                extra={"smtp_host": host},
            )

    async def send(self, message: OutgoingEmail) -> None:
        email = self.compose(message)
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.security == "tls",
            # True, not None: with None aiosmtplib silently stays in plaintext when the server
            # doesn't offer STARTTLS, which an attacker on the path can arrange (RFC 3207 §6).
            start_tls=self.security == "starttls",
            username=self.username or None,
            password=self._password if self.username else None,
            local_hostname=self._local_hostname,
            tls_context=self._tls_context,
        )
        try:
            async with smtp:
                self._local_hostname = smtp.local_hostname
                await smtp.send_message(email, sender=self._sender_address.addr_spec, recipients=[message.recipient])
        except (aiosmtplib.SMTPException, OSError) as exc:
            # `from None`: server replies can echo the address, so only the type and code leave here.
            code = getattr(exc, "code", None)
            detail = f" ({code})" if isinstance(code, int) else ""
            raise MailError(f"smtp send failed: {type(exc).__name__}{detail}") from None
        log.info("email sent", extra=self._log_fields(message))


def build_mailer(settings: Settings) -> Mailer:
    mail = settings.mail
    if mail.backend == "smtp":
        return SmtpMailer(
            mail.sender,
            host=mail.smtp_host,
            port=mail.smtp_port,
            security=mail.smtp_security,
            username=mail.smtp_username,
            password=mail.smtp_password.get_secret_value() if mail.smtp_password else None,
            timeout=mail.timeout,
        )
    directory = Path(mail.outbox_dir) if mail.outbox_dir else Path(settings.data_dir) / "outbox"
    if not settings.dev_mode:
        log.warning("mail.backend is outbox: emails are written to files, not sent", extra={"path": str(directory)})
    return OutboxMailer(directory, mail.sender)


class EmailRenderer:
    """Renders ``<name>.subject.txt``, ``<name>.txt`` and ``<name>.html`` from templates/email."""

    def __init__(self, *, site_name: str = "idp", directory: str | os.PathLike[str] = TEMPLATE_DIR) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            # Escape in HTML only: the plain-text part must show "&" and "<" as they are.
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
            # A missing variable is a bug in the caller, not an empty link in someone's inbox.
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._env.globals["site_name"] = site_name

    def render(self, template: str, *, to: str, **context: Any) -> OutgoingEmail:
        subject = self._env.get_template(f"{template}.subject.txt").render(context)
        text = self._env.get_template(f"{template}.txt").render(context)
        try:
            html_template = self._env.get_template(f"{template}.html")
        except jinja2.TemplateNotFound:
            html_template = None  # a plain-text-only message
        html = html_template.render(context) if html_template is not None else None
        # Subjects are one line; joining also neutralises a newline that came in through the context.
        return OutgoingEmail(to=to, subject=" ".join(subject.split()), text=text, html=html, template=template)
