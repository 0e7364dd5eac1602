"""SmtpMailer against a real SMTP server on loopback (aiosmtpd), and build_mailer's choice of backend."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from idp.config import Settings, generate_secrets, load_settings
from idp.mail import EmailRenderer, MailError, OutboxMailer, OutgoingEmail, SmtpMailer, build_mailer
from tests.smtp import SMTP_PASSWORD, SMTP_USER, SmtpServer, TlsFiles, make_tls_files, running_smtp_server

# The fixtures, until conftest provides them (bound by assignment: a plain import of a fixture
# name trips ruff's F811 in every test that takes it as an argument).

SENDER = "Example ID <no-reply@id.example.com>"
LINK = "https://id.example.com/verify?token=s3cr3t-token-value"


def verification(to: str = "Ada Lovelace <ada@example.org>") -> OutgoingEmail:
    return EmailRenderer(site_name="Example ID").render("verify_email", to=to, name="Ada", link=LINK, hours=24)


def plain_mailer(server: SmtpServer, **options: Any) -> SmtpMailer:
    return SmtpMailer(SENDER, host=server.host, port=server.port, security="none", timeout=5, **options)


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_with(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(
        environ={},
        overrides={"data_dir": str(tmp_path / "var"), "secrets": generate_secrets(), **overrides},
    )


async def test_plain_smtp_delivers_both_parts(smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idp.mail")
    mailer = plain_mailer(smtp_server)
    await mailer.send(verification())
    await mailer.close()

    [received] = await smtp_server.wait_for(1)
    assert received.mail_from == "no-reply@id.example.com"
    assert received.rcpt_tos == ["ada@example.org"]
    assert received.authenticated_as is None
    parsed = received.message
    assert parsed["From"] == SENDER
    assert parsed["To"] == "Ada Lovelace <ada@example.org>"
    assert parsed["Subject"] == "Confirm your email address"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Message-ID"].endswith("@id.example.com>")
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and LINK in plain.get_content()
    assert html is not None and f'href="{LINK}"' in html.get_content()

    [record] = [r for r in caplog.records if r.name == "idp.mail"]
    assert record.getMessage() == "email sent"
    assert (vars(record)["template"], vars(record)["recipient_domain"]) == ("verify_email", "example.org")
    logged = " ".join(str(value) for value in vars(record).values())
    assert "ada@" not in logged and "s3cr3t" not in logged


async def test_one_connection_per_message(smtp_server: SmtpServer) -> None:
    mailer = plain_mailer(smtp_server)
    await mailer.send(verification("ada@example.org"))
    await mailer.send(verification("bob@example.net"))

    first, second = await smtp_server.wait_for(2)
    assert (first.rcpt_tos, second.rcpt_tos) == (["ada@example.org"], ["bob@example.net"])


async def test_smtp_login(smtp_auth_server: SmtpServer) -> None:
    mailer = plain_mailer(smtp_auth_server, username=SMTP_USER, password=SMTP_PASSWORD)
    await mailer.send(verification())

    [received] = await smtp_auth_server.wait_for(1)
    assert received.authenticated_as == SMTP_USER
    assert received.rcpt_tos == ["ada@example.org"]


async def test_server_requiring_auth_refuses_anonymous_client(smtp_auth_server: SmtpServer) -> None:
    with pytest.raises(MailError, match=r"^smtp send failed: SMTPRecipientsRefused$"):
        await plain_mailer(smtp_auth_server).send(verification())
    assert smtp_auth_server.messages == []


async def test_wrong_password_is_a_mail_error_without_the_password(smtp_auth_server: SmtpServer) -> None:
    password = "wrong-but-still-a-secret-9f3k"
    with pytest.raises(MailError) as caught:
        await plain_mailer(smtp_auth_server, username=SMTP_USER, password=password).send(verification())

    assert str(caught.value) == "smtp send failed: SMTPAuthenticationError (535)"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert smtp_auth_server.messages == []


async def test_closed_port_is_a_mail_error_without_the_password() -> None:
    password = "a-secret-that-must-not-leak"
    mailer = SmtpMailer(
        SENDER, host="127.0.0.1", port=free_port(), security="none", username="u", password=password, timeout=2
    )
    with pytest.raises(MailError, match=r"^smtp send failed: SMTP\w*Error$") as caught:
        await mailer.send(verification())

    assert password not in str(caught.value) and password not in repr(caught.value)
    assert caught.value.__cause__ is None


async def test_required_starttls_not_offered_is_refused(smtp_server: SmtpServer) -> None:
    mailer = SmtpMailer(SENDER, host=smtp_server.host, port=smtp_server.port, security="starttls", timeout=5)
    with pytest.raises(MailError, match=r"^smtp send failed: SMTPException$"):
        await mailer.send(verification())
    # Nothing went out in plaintext instead.
    assert smtp_server.messages == []


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path)


async def test_starttls_with_login(tls_files: TlsFiles) -> None:
    with running_smtp_server(require_auth=True, tls="starttls", tls_files=tls_files) as server:
        mailer = SmtpMailer(
            SENDER,
            host=server.host,
            port=server.port,
            security="starttls",
            username=SMTP_USER,
            password=SMTP_PASSWORD,
            timeout=5,
            tls_context=tls_files.client_context(),
        )
        await mailer.send(verification())
        [received] = await server.wait_for(1)
    assert received.authenticated_as == SMTP_USER
    assert received.message["Subject"] == "Confirm your email address"


async def test_implicit_tls(tls_files: TlsFiles) -> None:
    with running_smtp_server(tls="implicit", tls_files=tls_files) as server:
        mailer = SmtpMailer(
            SENDER,
            host=server.host,
            port=server.port,
            security="tls",
            timeout=5,
            tls_context=tls_files.client_context(),
        )
        await mailer.send(verification())
        [received] = await server.wait_for(1)
    assert received.rcpt_tos == ["ada@example.org"]


async def test_untrusted_certificate_is_refused(tls_files: TlsFiles) -> None:
    with running_smtp_server(tls="starttls", tls_files=tls_files) as server:
        # The default trust store doesn't know the self-signed certificate.
        mailer = SmtpMailer(SENDER, host=server.host, port=server.port, security="starttls", timeout=5)
        with pytest.raises(MailError, match=r"^smtp send failed: \w+$"):
            await mailer.send(verification())
        assert server.messages == []


def test_unknown_security_is_refused() -> None:
    with pytest.raises(ValueError, match="smtp_security"):
        SmtpMailer(SENDER, host="127.0.0.1", port=25, security="ssl")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# build_mailer


async def test_build_mailer_smtp_from_settings(tmp_path: Path, smtp_auth_server: SmtpServer) -> None:
    settings = settings_with(
        tmp_path,
        mail={
            "backend": "smtp",
            "sender": SENDER,
            "smtp_host": smtp_auth_server.host,
            "smtp_port": smtp_auth_server.port,
            "smtp_security": "none",
            "smtp_username": SMTP_USER,
            "smtp_password": SMTP_PASSWORD,
            "timeout": 5,
        },
    )
    mailer = build_mailer(settings)
    assert isinstance(mailer, SmtpMailer)
    await mailer.send(verification())
    await mailer.close()

    [received] = await smtp_auth_server.wait_for(1)
    assert received.authenticated_as == SMTP_USER
    assert received.message["From"] == SENDER


async def test_build_mailer_outbox_defaults_to_data_dir(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, dev_mode=True)
    mailer = build_mailer(settings)
    assert isinstance(mailer, OutboxMailer)
    await mailer.send(verification())

    [path] = (tmp_path / "var" / "outbox").glob("*.eml")
    assert b"Subject: Confirm your email address" in path.read_bytes()
    assert b"From: idp <no-reply@localhost>" in path.read_bytes()


async def test_build_mailer_outbox_dir_setting(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, dev_mode=True, mail={"outbox_dir": str(tmp_path / "mails")})
    mailer = build_mailer(settings)
    await mailer.send(verification())
    assert len(list((tmp_path / "mails").glob("*.eml"))) == 1


def test_build_mailer_warns_about_outbox_outside_dev_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="idp.mail")
    assert isinstance(build_mailer(settings_with(tmp_path)), OutboxMailer)
    assert [r.getMessage() for r in caplog.records] == ["mail.backend is outbox: emails are written to files, not sent"]


def test_build_mailer_refuses_a_sender_without_domain(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mail\.sender"):
        build_mailer(settings_with(tmp_path, dev_mode=True, mail={"sender": "idp"}))
