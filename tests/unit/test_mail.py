"""Composing, rendering and writing mail, without a network: OutboxMailer and EmailRenderer."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
import stat
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import jinja2
import pytest

from idp.mail import EmailRenderer, MailError, OutboxMailer, OutgoingEmail

SENDER = "Example ID <no-reply@id.example.com>"
LINK = "https://id.example.com/verify?token=s3cr3t-token-value&x=1"


def read_eml(path: Path) -> EmailMessage:
    return cast(EmailMessage, email.message_from_bytes(path.read_bytes(), policy=email.policy.default))


def outbox_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.eml"))


def message(**overrides: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "to": "Ada Lovelace <ada@example.org>",
        "subject": "Confirm your email address",
        "text": f"Hello Ada,\n\n{LINK}\n",
        "html": f'<p>Hello Ada,</p><p><a href="{LINK}">confirm</a></p>',
        "template": "verify_email",
    }
    fields.update(overrides)
    return OutgoingEmail(**fields)


# ---------------------------------------------------------------------------------------------------
# OutboxMailer


async def test_outbox_writes_a_parseable_multipart_message(tmp_path: Path) -> None:
    outbox = tmp_path / "var" / "outbox"
    await OutboxMailer(outbox, SENDER).send(message())

    [path] = outbox_files(outbox)
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.eml", path.name)
    parsed = read_eml(path)
    assert parsed["From"] == SENDER
    assert parsed["To"] == "Ada Lovelace <ada@example.org>"
    assert parsed["Subject"] == "Confirm your email address"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Date"].datetime.tzinfo is not None
    assert re.fullmatch(r"<[^@<>]+@id\.example\.com>", parsed["Message-ID"])
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and html is not None
    assert LINK in plain.get_content()
    assert 'href="https://id.example.com/verify?token=s3cr3t-token-value&x=1"' in html.get_content()
    # RFC 5322 §2.1: lines end in CRLF.
    assert b"\r\n" in path.read_bytes() and b"\r\n" not in path.read_bytes().replace(b"\r\n", b"")


async def test_outbox_file_and_directory_are_private(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    await OutboxMailer(outbox, SENDER).send(message())

    [path] = outbox_files(outbox)
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Nothing half-written is left behind.
    assert [p.name for p in outbox.iterdir()] == [path.name]


async def test_outbox_text_only_message_is_single_part(tmp_path: Path) -> None:
    await OutboxMailer(tmp_path, SENDER).send(message(html=None))

    [path] = outbox_files(tmp_path)
    parsed = read_eml(path)
    assert parsed.get_content_type() == "text/plain"
    assert LINK in parsed.get_content()


async def test_outbox_messages_get_distinct_files_and_message_ids(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path, SENDER)
    for _ in range(3):
        await mailer.send(message())

    paths = outbox_files(tmp_path)
    assert len(paths) == 3
    assert len({read_eml(p)["Message-ID"] for p in paths}) == 3


async def test_outbox_logs_template_and_domain_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idp.mail")
    await OutboxMailer(tmp_path, SENDER).send(message())

    [record] = [r for r in caplog.records if r.name == "idp.mail"]
    assert record.getMessage() == "email written to outbox"
    fields = vars(record)
    assert fields["template"] == "verify_email"
    assert fields["recipient_domain"] == "example.org"
    assert fields["path"] == str(outbox_files(tmp_path)[0])
    logged = " ".join(str(value) for value in fields.values())
    for private in ("ada@", "Ada Lovelace", "s3cr3t", "Confirm your email"):
        assert private not in logged


async def test_outbox_log_line_through_the_production_handler(tmp_path: Path, json_logs: Any) -> None:
    await OutboxMailer(tmp_path, SENDER).send(message())

    [entry] = [json.loads(line) for line in json_logs.getvalue().splitlines() if '"idp.mail"' in line]
    assert entry["msg"] == "email written to outbox"
    assert (entry["template"], entry["recipient_domain"]) == ("verify_email", "example.org")
    assert "ada@" not in json_logs.getvalue() and "s3cr3t" not in json_logs.getvalue()


async def test_outbox_write_failure_is_a_mail_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    with pytest.raises(MailError, match=r"^outbox write failed: \w+Error$"):
        await OutboxMailer(blocker / "outbox", SENDER).send(message())


async def test_mailer_close_is_harmless(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path, SENDER)
    await mailer.close()
    await mailer.close()


# ---------------------------------------------------------------------------------------------------
# Header injection and addresses


@pytest.mark.parametrize(
    "to",
    [
        "ada@example.org\r\nBcc: eve@evil.example",
        "ada@example.org\nBcc: eve@evil.example",
        "ada@example.org\r",
    ],
)
def test_recipient_with_line_break_is_refused(to: str) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        message(to=to)


@pytest.mark.parametrize("subject", ["Hello\r\nBcc: eve@evil.example", "Hello\nthere", "Hello\r"])
def test_subject_with_line_break_is_refused(subject: str) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        message(subject=subject)


@pytest.mark.parametrize(
    "to", ["ada@example.org, eve@evil.example", "", "not an address", "ada@", "ada@example.org>", "a\x00b@example.org"]
)
def test_recipient_must_be_exactly_one_address(to: str) -> None:
    with pytest.raises(ValueError, match="exactly one address"):
        message(to=to)


def test_quoted_display_name_with_comma_is_one_recipient() -> None:
    outgoing = message(to='"Lovelace, Ada" <ada@Example.ORG>')
    assert outgoing.recipient == "ada@Example.ORG"
    assert outgoing.recipient_domain == "example.org"


@pytest.mark.parametrize("sender", ["no-reply", "", "a@x.example, b@y.example", "idp <no-reply@x.example>\r\nBcc: e@y"])
def test_sender_must_be_one_address_with_a_domain(tmp_path: Path, sender: str) -> None:
    with pytest.raises(ValueError, match=r"mail\.sender"):
        OutboxMailer(tmp_path, sender)


# ---------------------------------------------------------------------------------------------------
# Templates

TEMPLATES: dict[str, dict[str, Any]] = {
    "verify_email": {"name": "Ada", "link": LINK, "hours": 24},
    "already_registered": {
        "login_link": "https://id.example.com/login",
        "reset_link": "https://id.example.com/password/forgot",
    },
    "password_reset": {"link": LINK, "minutes": 30},
    "email_changed": {
        "new_email": "ada.new@example.com",
        "time": "2025-01-02 03:04 UTC",
        "reset_link": "https://id.example.com/password/forgot",
    },
    "password_changed": {
        "time": "2025-01-02 03:04 UTC",
        "ip": "203.0.113.7",
        "reset_link": "https://id.example.com/password/forgot",
    },
    "email_change_verify": {"link": LINK, "new_email": "ada.new@example.org"},
    "account_deleted": {},
    "security_notice": {
        "what": "A passkey was added to your account.",
        "time": "2025-01-02 03:04 UTC",
        "ip": "203.0.113.7",
        "security_link": "https://id.example.com/account/security",
        "reset_link": "https://id.example.com/password/forgot",
    },
}


@pytest.fixture(scope="module")
def renderer() -> EmailRenderer:
    return EmailRenderer(site_name="Example ID")


def test_every_template_has_all_three_files() -> None:
    directory = Path(__file__).resolve().parents[2] / "idp" / "templates" / "email"
    names = {p.name.split(".", 1)[0] for p in directory.iterdir() if not p.name.startswith("_")}
    assert names == set(TEMPLATES)
    for name in TEMPLATES:
        for suffix in (".subject.txt", ".txt", ".html"):
            assert (directory / f"{name}{suffix}").is_file()
        assert len((directory / f"{name}.subject.txt").read_text().strip().splitlines()) == 1


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_template_renders_with_its_context(renderer: EmailRenderer, template: str) -> None:
    context = TEMPLATES[template]
    outgoing = renderer.render(template, to="ada@example.org", **context)

    assert outgoing.to == "ada@example.org"
    assert outgoing.template == template
    assert outgoing.subject and "\n" not in outgoing.subject and outgoing.subject == outgoing.subject.strip()
    assert outgoing.html is not None
    assert "Example ID" in outgoing.text and "Example ID" in outgoing.html
    for value in context.values():
        shown = str(value)
        assert shown in outgoing.text
        # Links are escaped inside the HTML part ("&" → "&amp;") and appear as text too.
        escaped = shown.replace("&", "&amp;")
        assert escaped in outgoing.html
        if shown.startswith("https://"):
            assert f'href="{escaped}"' in outgoing.html
            assert outgoing.html.count(escaped) >= 2
    # No tracking pixels, remote styles or scripts.
    for external in ("<img", "<script", "<link", "src=", "url(", "@import"):
        assert external not in outgoing.html.lower()


def test_html_escapes_the_name_but_text_keeps_it(renderer: EmailRenderer) -> None:
    name = '<script>alert("x")</script> & Co'
    outgoing = renderer.render("verify_email", to="ada@example.org", name=name, link=LINK, hours=1)

    assert outgoing.html is not None
    assert "<script>" not in outgoing.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in outgoing.html
    assert f"Hello {name}," in outgoing.text
    assert "1 hour." in outgoing.text


def test_greeting_without_a_name(renderer: EmailRenderer) -> None:
    outgoing = renderer.render("verify_email", to="ada@example.org", name="", link=LINK, hours=24)

    assert outgoing.html is not None
    assert outgoing.text.startswith("Hello,\n")
    assert "<p>Hello,</p>" in outgoing.html


def test_site_name_is_keyword_only() -> None:
    # A Settings object passed positionally would otherwise be printed into every email.
    with pytest.raises(TypeError):
        EmailRenderer("idp")  # type: ignore[call-arg]


def test_missing_variable_is_an_error(renderer: EmailRenderer) -> None:
    with pytest.raises(jinja2.UndefinedError, match="hours"):
        renderer.render("verify_email", to="ada@example.org", name="Ada", link=LINK)


def test_unknown_template_is_an_error(renderer: EmailRenderer) -> None:
    with pytest.raises(jinja2.TemplateNotFound):
        renderer.render("no_such_template", to="ada@example.org")


def test_rendered_recipient_is_checked(renderer: EmailRenderer) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        renderer.render("account_deleted", to="ada@example.org\r\nBcc: eve@evil.example")


def test_text_only_template(tmp_path: Path) -> None:
    (tmp_path / "note.subject.txt").write_text("A  note\n")
    (tmp_path / "note.txt").write_text("Hi {{ who }}\n")
    outgoing = EmailRenderer(directory=tmp_path).render("note", to="ada@example.org", who="Ada & Bob")

    assert outgoing.subject == "A note"
    assert outgoing.text == "Hi Ada & Bob\n"
    assert outgoing.html is None


@pytest.mark.parametrize(
    ("host", "warned"),
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("127.evil.example", True), ("mail.example", True)],
)
def test_unencrypted_smtp_is_flagged_unless_the_host_is_loopback(caplog, host, warned) -> None:
    """The one loopback rule (idp.security.hosts, as for the issuer, L10): a name starting with
    "127." is not this machine."""
    from idp.mail import SmtpMailer

    with caplog.at_level("WARNING", logger="idp.mail"):
        SmtpMailer("idp <no-reply@example.com>", host=host, port=25, security="none")
    assert any("unencrypted" in record.getMessage() for record in caplog.records) is warned
