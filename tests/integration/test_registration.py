"""Self-service registration with email verification, and prompt=create (OIDC Initiating User
Registration 1.0), with mail delivered through a real SMTP server on loopback.

Covers ASVS 6.2.1/6.2.4/6.2.11 (the policy at sign-up), 6.3.8 (no enumeration through the
registration answer), 6.4.1 (single-use, expiring activation links) and 11.4.2 (argon2id). Each
test asserts the HTTP answer (status, page markers), the database rows and the mail received.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import func, select, update

from idp.outbox.operations import outbox_stats
from idp.storage.models import AuditEvent, OneTimeToken, User, utcnow
from tests.mail_flows import (  # noqa: F401 - fixtures are found by name
    SENDER,
    body,
    closed_smtp_port,
    hanging_smtp_port,
    settings_overrides,
    settle,
    text_of,
    token_of,
)
from tests.oauth_helpers import (
    PASSWORD,
    SPA_REDIRECT,
    add_user,
    cookie_value,
    csrf_from,
    login,
    make_world,
    pkce_pair,
    query_of,
)
from tests.smtp import ReceivedMessage

ISSUER = "http://127.0.0.1:8000"
SESSION_COOKIE = "idp_session"  # http issuer in tests: no __Host- prefix
NEW_PASSWORD = "copper-walrus-violin-tundra"
ADA = "ada.lovelace@example.org"
VERIFY_LINK = re.compile(re.escape(ISSUER) + r"(/verify-email\?token=[A-Za-z0-9_\-]+)")
CHECK_EMAIL = '<h1 id="message-title">Check your email</h1>'
INVALID_LINK = '<h1 id="message-title">This link can&#39;t be used</h1>'


# -- helpers ---------------------------------------------------------------------------------------


async def register(
    client: Any,
    email: str,
    password: str = NEW_PASSWORD,
    *,
    name: str = "Ada Lovelace",
    return_to: str | None = None,
) -> Any:
    """Fill in and submit the registration form the way a browser would."""
    query = f"?{urlencode({'return_to': return_to})}" if return_to else ""
    page = await client.get(f"/register{query}")
    assert page.status_code == 200
    form = {"csrf_token": csrf_from(await page.get_data(as_text=True)), "email": email, "password": password}
    form["name"] = name
    if return_to:
        form["return_to"] = return_to
    return await client.post("/register", form=form)


def verify_path(received: ReceivedMessage) -> str:
    """The verification link in a received email, as a local path."""
    match = VERIFY_LINK.search(text_of(received))
    assert match, "no verification link in the email"
    return match.group(1)


async def confirm(client: Any, path: str) -> Any:
    """Open the emailed link and press the confirm button."""
    page = await client.get(path)
    assert page.status_code == 200, await page.get_data(as_text=True)
    html = await page.get_data(as_text=True)
    return await client.post("/verify-email", form={"csrf_token": csrf_from(html), "token": token_of(path)})


async def user_by_email(runtime: Any, email: str) -> User | None:
    async with runtime.db.session() as session:
        return (await session.execute(select(User).where(User.email_normalized == email.lower()))).scalar_one_or_none()


async def count_users(runtime: Any) -> int:
    async with runtime.db.session() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


async def audit(runtime: Any, event: str) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event == event))).scalars())


# -- the registration form -------------------------------------------------------------------------


async def test_register_page_shows_the_form(client: Any) -> None:
    page = await client.get("/register?return_to=/account/apps")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    html = await body(page)
    assert 'id="register-form"' in html
    assert 'name="return_to" value="/account/apps"' in html
    assert 'type="password" id="password" name="password"' in html and 'minlength="15"' in html
    assert csrf_from(html)


async def test_register_verify_and_sign_in_in_the_same_browser(
    app: Any, client: Any, runtime: Any, smtp_server: Any
) -> None:
    response = await register(client, ADA, name="Ada Lovelace")
    assert response.status_code == 200
    assert CHECK_EMAIL in await body(response)

    user = await user_by_email(runtime, ADA)
    assert user is not None
    assert user.email_verified is False
    assert user.name == "Ada Lovelace"
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert NEW_PASSWORD not in user.password_hash

    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == [ADA]
    assert mail.message["Subject"] == "Confirm your email address"
    assert mail.message["From"] == SENDER
    path = verify_path(mail)
    # Only a digest of the token is stored.
    async with runtime.db.session() as session:
        [row] = (await session.execute(select(OneTimeToken))).scalars().all()
    assert row.purpose == "verify_email" and row.user_id == user.id and token_of(path) not in row.digest

    # Opening the link (twice, as mail scanners do) only shows the confirm button.
    for _ in range(2):
        page = await client.get(path)
        assert page.status_code == 200
        html = await body(page)
        assert 'id="email-form"' in html and 'id="email-submit"' in html
        assert f'name="token" value="{token_of(path)}"' in html
    async with runtime.db.session() as session:
        assert (await session.get(OneTimeToken, row.digest)).used_at is None  # type: ignore[union-attr]
    assert (await user_by_email(runtime, ADA)).email_verified is False  # type: ignore[union-attr]
    assert cookie_value(client, SESSION_COOKIE) is None

    confirmed = await client.post("/verify-email", form={"csrf_token": csrf_from(html), "token": token_of(path)})
    assert confirmed.status_code == 303
    assert confirmed.headers["Location"] == "/account"
    assert cookie_value(client, SESSION_COOKIE)
    assert (await user_by_email(runtime, ADA)).email_verified is True  # type: ignore[union-attr]
    [verified_event] = await audit(runtime, "email_verified")
    assert verified_event.subject_id == user.id
    assert [event.subject_id for event in await audit(runtime, "login_succeeded")] == [user.id]

    account = await client.get("/account")
    assert account.status_code == 200
    assert f'<strong id="account-email">{ADA}</strong>' in await body(account)

    # The link is single-use.
    again = await client.post("/verify-email", form={"csrf_token": csrf_from(html), "token": token_of(path)})
    assert again.status_code == 400
    assert INVALID_LINK in await body(again)
    assert (await client.get(path)).status_code == 400
    await settle(app)
    assert len(smtp_server.messages) == 1


async def test_verifying_in_another_browser_confirms_without_signing_in(
    app: Any, client: Any, runtime: Any, smtp_server: Any
) -> None:
    response = await register(client, ADA, return_to="/account/apps")
    assert response.status_code == 200
    [mail] = await smtp_server.wait_for(1)

    other = app.test_client()  # e.g. the link opened on a phone
    confirmed = await confirm(other, verify_path(mail))
    assert confirmed.status_code == 200
    html = await body(confirmed)
    assert '<h1 id="message-title">Email address confirmed</h1>' in html
    assert 'id="message-link" href="/login?return_to=/account/apps"' in html
    assert cookie_value(other, SESSION_COOKIE) is None
    assert cookie_value(client, SESSION_COOKIE) is None
    assert (await other.get("/account")).headers["Location"].startswith("/login")
    assert (await user_by_email(runtime, ADA)).email_verified is True  # type: ignore[union-attr]

    signed_in = await login(other, ADA, NEW_PASSWORD, return_to="/account")
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/account"


async def test_expired_verification_link_is_refused(client: Any, runtime: Any, smtp_server: Any) -> None:
    await register(client, ADA)
    [mail] = await smtp_server.wait_for(1)
    path = verify_path(mail)
    async with runtime.db.session() as session:
        [row] = (await session.execute(select(OneTimeToken))).scalars().all()
        assert row.expires_at - row.created_at == timedelta(seconds=runtime.settings.accounts.verification_ttl)
    csrf = csrf_from(await body(await client.get(path)))
    async with runtime.db.session() as session:
        await session.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))

    page = await client.get(path)
    assert page.status_code == 400 and INVALID_LINK in await body(page)
    posted = await client.post("/verify-email", form={"csrf_token": csrf, "token": token_of(path)})
    assert posted.status_code == 400 and INVALID_LINK in await body(posted)
    assert (await user_by_email(runtime, ADA)).email_verified is False  # type: ignore[union-attr]
    assert cookie_value(client, SESSION_COOKIE) is None


@pytest.mark.parametrize("token", ["", "x", "A" * 43, "A" * 500])
async def test_unknown_verification_tokens_are_refused(client: Any, token: str) -> None:
    page = await client.get(f"/verify-email?{urlencode({'token': token})}")
    assert page.status_code == 400 and INVALID_LINK in await body(page)
    csrf = csrf_from(await body(await client.get("/register")))
    posted = await client.post("/verify-email", form={"csrf_token": csrf, "token": token})
    assert posted.status_code == 400 and INVALID_LINK in await body(posted)


async def test_unverified_account_cannot_sign_in(client: Any, runtime: Any, smtp_server: Any) -> None:
    await register(client, ADA)
    await smtp_server.wait_for(1)
    response = await login(client, ADA, NEW_PASSWORD, return_to="/account")
    assert response.status_code == 401
    html = await body(response)
    assert 'id="login-error"' in html and "Confirm your email address first" in html
    assert cookie_value(client, SESSION_COOKIE) is None
    [failed] = await audit(runtime, "login_failed")
    assert failed.details["reason"] == "unverified"


async def test_resend_makes_only_the_newest_link_work(client: Any, runtime: Any, smtp_server: Any) -> None:
    await register(client, ADA, return_to="/account/apps")
    [first] = await smtp_server.wait_for(1)
    old_path = verify_path(first)

    form_page = await client.get("/verify-email/resend?return_to=/account/apps")
    assert form_page.status_code == 200
    html = await body(form_page)
    assert 'id="email-form"' in html and 'name="return_to" value="/account/apps"' in html
    resent = await client.post(
        "/verify-email/resend",
        form={"csrf_token": csrf_from(html), "email": ADA, "return_to": "/account/apps"},
    )
    assert resent.status_code == 200 and CHECK_EMAIL in await body(resent)
    _, second = await smtp_server.wait_for(2)
    assert second.rcpt_tos == [ADA] and second.message["Subject"] == "Confirm your email address"
    new_path = verify_path(second)
    assert new_path != old_path

    assert (await client.get(old_path)).status_code == 400
    stale = await client.post("/verify-email", form={"csrf_token": csrf_from(html), "token": token_of(old_path)})
    assert stale.status_code == 400
    confirmed = await confirm(client, new_path)
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/account/apps"
    assert (await user_by_email(runtime, ADA)).email_verified is True  # type: ignore[union-attr]


async def test_resend_answers_the_same_for_any_address(app: Any, runtime: Any, smtp_server: Any) -> None:
    await add_user(runtime, "verified@example.com")
    answers = []
    for address in ("verified@example.com", "nobody@example.com", "not an address"):
        browser = app.test_client()
        page = await browser.get("/verify-email/resend")
        response = await browser.post(
            "/verify-email/resend", form={"csrf_token": csrf_from(await body(page)), "email": address}
        )
        answers.append((response.status_code, await body(response)))
    assert answers[0][0] == 200 and CHECK_EMAIL in answers[0][1]
    assert answers[0] == answers[1] == answers[2]
    await settle(app)
    assert smtp_server.messages == []


# -- non-enumeration (ASVS 6.3.8) --------------------------------------------------------------------


def _comparable_headers(response: Any) -> dict[str, str]:
    skip = {"x-request-id", "date", "set-cookie"}
    return {name.lower(): value for name, value in response.headers.items() if name.lower() not in skip}


async def test_registering_a_taken_address_looks_the_same_and_mails_the_owner(
    app: Any, runtime: Any, smtp_server: Any
) -> None:
    owner_id = await add_user(runtime, "alice@example.com")
    async with runtime.db.session() as session:
        owner_hash = (await session.get(User, owner_id)).password_hash  # type: ignore[union-attr]

    fresh = await register(app.test_client(), "bob@example.com")
    [to_bob] = await smtp_server.wait_for(1)
    taken = await register(app.test_client(), "Alice@EXAMPLE.com")
    _, to_alice = await smtp_server.wait_for(2)
    await settle(app)
    assert len(smtp_server.messages) == 2

    assert fresh.status_code == taken.status_code == 200
    assert await body(fresh) == await body(taken)
    assert CHECK_EMAIL in await body(taken)
    assert _comparable_headers(fresh) == _comparable_headers(taken)

    # No second account, and the owner's password is untouched.
    assert await count_users(runtime) == 2
    async with runtime.db.session() as session:
        owner = await session.get(User, owner_id)
        assert owner is not None and owner.password_hash == owner_hash and owner.email == "alice@example.com"
        assert (
            await session.execute(select(OneTimeToken).where(OneTimeToken.user_id == owner_id))
        ).scalars().all() == []

    assert to_bob.rcpt_tos == ["bob@example.com"]
    assert to_alice.rcpt_tos == ["alice@example.com"]
    assert to_alice.message["Subject"] == "Someone tried to register with your email address"
    text = text_of(to_alice)
    assert "you already have one" in text
    assert f"{ISSUER}/login" in text and f"{ISSUER}/forgot-password" in text
    assert "/verify-email" not in text
    [attempt] = await audit(runtime, "registration_duplicate")
    assert attempt.subject_id == owner_id and attempt.outcome == "refused"


class RegistrationWork:
    """What one request costs the server, counted: password-policy verdicts (zxcvbn included),
    password hashes and SQL statements sent to the database."""

    def __init__(self, runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        from sqlalchemy import event

        from idp.accounts.password_policy import PasswordPolicy

        self.policy_checks = 0
        self.hashes = 0
        self.statements: list[str] = []
        check, hash_password = PasswordPolicy.check, runtime.passwords.hash

        def counted_check(policy: PasswordPolicy, *args: Any, **kwargs: Any) -> Any:
            self.policy_checks += 1
            return check(policy, *args, **kwargs)

        async def counted_hash(password: str) -> str:
            self.hashes += 1
            return str(await hash_password(password))

        def on_statement(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            target = re.search(r"\b(?:INTO|FROM|UPDATE)\s+\"?(\w+)", statement)
            self.statements.append(f"{statement.split()[0]} {target.group(1) if target else ''}".strip())

        monkeypatch.setattr(PasswordPolicy, "check", counted_check)
        monkeypatch.setattr(runtime.passwords, "hash", counted_hash)
        engine = runtime.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", on_statement)
        self._stop = lambda: event.remove(engine, "before_cursor_execute", on_statement)

    def reset(self) -> None:
        self.policy_checks, self.hashes, self.statements = 0, 0, []

    def snapshot(self) -> tuple[int, int, list[str]]:
        return self.policy_checks, self.hashes, list(self.statements)


async def test_a_fresh_and_a_taken_address_cost_the_same_work(
    app: Any, runtime: Any, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ASVS 6.3.8 (timing), security review L11: the fresh path ran the password policy twice
    (zxcvbn included) and did more database work than the taken one, which showed in response
    times. Both now judge the password once, hash it once and send the same number of statements:
    the database decides whether the address is taken."""
    await add_user(runtime, "alice@example.com")
    # The outbox's worker would send the queued mail while the request is counted; settle does.
    await runtime.outbox.stop()
    work = RegistrationWork(runtime, monkeypatch)
    costs = {}
    for label, address in (("fresh", "bob@example.com"), ("taken", "Alice@EXAMPLE.com")):
        browser = app.test_client()
        page = await browser.get("/register")
        form = {"csrf_token": csrf_from(await body(page)), "email": address, "password": NEW_PASSWORD}
        work.reset()
        response = await browser.post("/register", form={**form, "name": "Ada Lovelace"})
        costs[label] = work.snapshot()
        assert response.status_code == 200 and CHECK_EMAIL in await body(response)
        await settle(app)
    work._stop()

    (fresh_policy, fresh_hashes, fresh_sql), (taken_policy, taken_hashes, taken_sql) = costs.values()
    assert fresh_policy == taken_policy == 1
    assert fresh_hashes == taken_hashes == 1
    assert len(fresh_sql) == len(taken_sql), (fresh_sql, taken_sql)
    # Still one account per address, the right mail to each (sent after the answer).
    assert await count_users(runtime) == 2
    to_bob, to_alice = await smtp_server.wait_for(2)
    assert to_bob.rcpt_tos == ["bob@example.com"] and "/verify-email?token=" in text_of(to_bob)
    assert to_alice.rcpt_tos == ["alice@example.com"]
    assert to_alice.message["Subject"] == "Someone tried to register with your email address"


async def test_sign_ups_racing_for_one_address_make_one_account(runtime: Any, smtp_server: Any) -> None:
    """The database decides whether an address is free, so two registrations of the same address
    at the same moment make one account: one gets the verification link, the other is the notice
    to its owner; neither fails."""
    from idp.accounts.registration import signup

    await asyncio.gather(
        *(signup.register(runtime.accounts, email=ADA, password=NEW_PASSWORD, name=None) for _ in range(2))
    )
    assert await count_users(runtime) == 1
    received = await smtp_server.wait_for(2)
    assert sorted(message.message["Subject"] for message in received) == [
        "Confirm your email address",
        "Someone tried to register with your email address",
    ]
    assert [event.event for event in await audit(runtime, "user_created")] == ["user_created"]
    assert len(await audit(runtime, "registration_duplicate")) == 1


# -- input errors ----------------------------------------------------------------------------------


def _error_fields(html: str) -> list[str]:
    return re.findall(r'<li data-field="([^"]+)">', html)


@pytest.mark.parametrize(
    ("email", "password", "name", "field", "message"),
    [
        ("", NEW_PASSWORD, "", "email", "Enter your email address."),
        ("   ", NEW_PASSWORD, "", "email", "Enter your email address."),
        ("not-an-address", NEW_PASSWORD, "", "email", "@"),
        ("two@@example.com", NEW_PASSWORD, "", "email", ""),
        ("a@b@example.com", NEW_PASSWORD, "", "email", ""),
        ("ada@example.com, eve@example.net", NEW_PASSWORD, "", "email", ""),
        ("ada@example.com\r\nBcc: eve@example.net", NEW_PASSWORD, "", "email", ""),
        ("ada\x00@example.com", NEW_PASSWORD, "", "email", ""),
        ("x" * 400 + "@example.com", NEW_PASSWORD, "", "email", ""),
        ("josé@example.org", NEW_PASSWORD, "", "email", "before the @"),
        (ADA, "", "", "password", "Choose a password."),
        (ADA, "short phrase", "", "password", "at least 15 characters"),
        (ADA, "passwordstandard", "", "password", "commonly used or leaked"),
        (ADA, "1qaz2wsx3edc4rfv", "", "password", "commonly used or leaked"),
        ("marguerite.duras@example.com", "marguerite.duras-writes-novels", "", "password", "email address"),
        (ADA, "violin-lovelace-orbit-harbour", "Ada Lovelace", "password", "your name"),
        (ADA, "my-openid-provider-secret", "", "password", '"openid"'),
        (ADA, "copper-walrus\x00violin-tundra", "", "password", "control character"),
        (ADA, "x" * 129, "", "password", "at most 128 characters"),
        (ADA, NEW_PASSWORD, "n" * 201, "name", "at most 200 characters"),
        (ADA, NEW_PASSWORD, "Ada\x00Lovelace", "name", ""),
        (ADA, NEW_PASSWORD, "Ada\x1b[31mLovelace", "name", ""),
        (ADA, NEW_PASSWORD, "Ada\u2028Lovelace", "name", ""),
    ],
    ids=[
        "email-empty",
        "email-blank",
        "email-malformed",
        "email-double-at",
        "email-two-ats",
        "email-two-addresses",
        "email-header-injection",
        "email-nul",
        "email-too-long",
        "email-non-ascii-local-part",
        "password-empty",
        "password-too-short",
        "password-common",
        "password-common-2",
        "password-email-local-part",
        "password-name",
        "password-context-word",
        "password-nul",
        "password-too-long",
        "name-too-long",
        "name-nul",
        "name-control-character",
        "name-line-separator",
    ],
)
async def test_input_errors_name_the_field_and_create_nothing(
    app: Any,
    client: Any,
    runtime: Any,
    smtp_server: Any,
    email: str,
    password: str,
    name: str,
    field: str,
    message: str,
) -> None:
    response = await register(client, email, password, name=name)
    assert response.status_code == 400
    html = await body(response)
    assert 'id="register-form"' in html and 'id="register-errors"' in html
    assert _error_fields(html) == [field]
    assert message.replace('"', "&#34;") in html
    assert password not in html or not password  # never echoed back
    assert "\x00" not in html
    assert await count_users(runtime) == 0
    await settle(app)
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("raw_field", "raw_value", "message"),
    [
        ("email", b"ada%FF%FE%40example.org", ""),
        ("password", b"copper%C3%28walrus-violin-tundra", "could not be read"),
        ("password", b"copper%00walrus-violin-tundra", "control character"),
        ("name", b"Ada%FF%FELovelace", "can&#39;t be used"),
        ("name", b"Ada%00Lovelace", "can&#39;t be used"),
    ],
    ids=["email-invalid-utf8", "password-invalid-utf8", "password-nul", "name-invalid-utf8", "name-nul"],
)
async def test_invalid_utf8_or_nul_in_a_posted_field_is_a_400_not_a_500(
    app: Any, client: Any, runtime: Any, smtp_server: Any, raw_field: str, raw_value: bytes, message: str
) -> None:
    """Bytes a browser would never send: percent-encoded invalid UTF-8 arrives as U+FFFD."""
    csrf = csrf_from(await body(await client.get("/register")))
    values = {"email": b"ada%40example.org", "password": NEW_PASSWORD.encode(), "name": b"Ada", raw_field: raw_value}
    data = b"&".join([b"csrf_token=" + csrf.encode(), *(key.encode() + b"=" + value for key, value in values.items())])
    response = await client.post("/register", data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400, await body(response)
    html = await body(response)
    assert _error_fields(html) == [raw_field]
    assert message in html
    assert "\x00" not in html
    assert await count_users(runtime) == 0
    await settle(app)
    assert smtp_server.messages == []


async def test_a_form_that_is_not_utf8_at_all_is_refused(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    """Raw non-UTF-8 bytes make the whole form unreadable, its CSRF token included: 403, not 500."""
    csrf = csrf_from(await body(await client.get("/register")))
    data = (
        b"csrf_token=" + csrf.encode() + b"&email=ada%40example.org&password=copper-walrus-violin-tundra&name=\xff\xfe"
    )
    response = await client.post("/register", data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 403
    assert await count_users(runtime) == 0
    await settle(app)
    assert smtp_server.messages == []


async def test_registration_needs_a_valid_csrf_token(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    form = {"email": ADA, "password": NEW_PASSWORD, "name": ""}
    missing = await client.post("/register", form=form)
    assert missing.status_code == 403
    await client.get("/register")  # the browser now has a CSRF cookie, but the form is forged
    forged = await client.post("/register", form={**form, "csrf_token": "0" * 64})
    assert forged.status_code == 403
    # A token from another browser doesn't fit this one's cookie.
    other_token = csrf_from(await body(await app.test_client().get("/register")))
    crossed = await client.post("/register", form={**form, "csrf_token": other_token})
    assert crossed.status_code == 403
    assert await count_users(runtime) == 0
    await settle(app)
    assert smtp_server.messages == []


async def test_verify_needs_a_valid_csrf_token(client: Any, runtime: Any, smtp_server: Any) -> None:
    await register(client, ADA)
    [mail] = await smtp_server.wait_for(1)
    refused = await client.post("/verify-email", form={"token": token_of(verify_path(mail))})
    assert refused.status_code == 403
    assert (await user_by_email(runtime, ADA)).email_verified is False  # type: ignore[union-attr]
    assert (await confirm(client, verify_path(mail))).status_code == 303  # still usable


@pytest.mark.parametrize("return_to", ["https://evil.example/steal", "//evil.example/", "/a\r\nX: y"])
async def test_return_to_must_be_a_plain_local_path(client: Any, smtp_server: Any, return_to: str) -> None:
    response = await register(client, ADA, return_to=return_to)
    assert response.status_code == 200
    [first] = await smtp_server.wait_for(1)
    # The same for a link sent again.
    page = await client.get("/verify-email/resend")
    resent = await client.post(
        "/verify-email/resend", form={"csrf_token": csrf_from(await body(page)), "email": ADA, "return_to": return_to}
    )
    assert resent.status_code == 200
    _, second = await smtp_server.wait_for(2)
    assert (await client.get(verify_path(first))).status_code == 400
    confirmed = await confirm(client, verify_path(second))
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/account"


async def test_a_nul_in_return_to_is_refused(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    """A NUL (unstorable in PostgreSQL) is bad input, not a path to ignore: 400, no account, no mail."""
    assert (await client.get("/register?return_to=%2Faccount%00")).status_code == 400
    page = await client.get("/verify-email/resend")
    resent = await client.post(
        "/verify-email/resend", form={"csrf_token": csrf_from(await body(page)), "email": ADA, "return_to": "/a\x00"}
    )
    assert resent.status_code == 400
    assert "&#39;return_to&#39; contains a NUL character" in await body(resent)
    assert await count_users(runtime) == 0
    await settle(app)
    assert smtp_server.messages == []


# -- prompt=create -----------------------------------------------------------------------------------


def _authorize_query(client_id: str, challenge: str, **extra: str) -> str:
    return urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": SPA_REDIRECT,
            "scope": "openid email",
            "state": "st-create",
            "nonce": "n-create",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
    )


async def test_prompt_create_registers_verifies_and_returns_a_code(client: Any, runtime: Any, smtp_server: Any) -> None:
    world = await make_world(runtime)
    verifier, challenge = pkce_pair()
    started = await client.get(f"/authorize?{_authorize_query(world.spa_id, challenge, prompt='create')}")
    assert started.status_code == 303
    location = started.headers["Location"]
    assert urlsplit(location).path == "/register"
    resume = query_of(location)["return_to"]
    assert re.fullmatch(r"/authorize/resume/[A-Za-z0-9_\-]+", resume)

    page = await client.get(location)
    assert page.status_code == 200 and f'name="return_to" value="{resume}"' in await body(page)
    registered = await register(client, ADA, return_to=resume)
    assert registered.status_code == 200 and CHECK_EMAIL in await body(registered)
    [mail] = await smtp_server.wait_for(1)

    confirmed = await confirm(client, verify_path(mail))
    assert confirmed.status_code == 303
    assert confirmed.headers["Location"] == resume
    resumed = await client.get(resume)
    assert resumed.status_code == 303
    consent_path = resumed.headers["Location"]
    assert consent_path.startswith("/authorize/consent/")
    consent_page = await client.get(consent_path)
    assert consent_page.status_code == 200
    decided = await client.post(
        consent_path, form={"csrf_token": csrf_from(await body(consent_page)), "decision": "allow"}
    )
    assert decided.status_code == 303
    redirect = decided.headers["Location"]
    assert redirect.startswith(SPA_REDIRECT + "?")
    result = query_of(redirect)
    assert result["state"] == "st-create" and result["iss"] == ISSUER and result["code"]

    token = await client.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": result["code"],
            "redirect_uri": SPA_REDIRECT,
            "code_verifier": verifier,
            "client_id": world.spa_id,
        },
    )
    assert token.status_code == 200
    userinfo = await client.get(
        "/userinfo", headers={"Authorization": f"Bearer {(await token.get_json())['access_token']}"}
    )
    claims = await userinfo.get_json()
    assert claims["email"] == ADA and claims["email_verified"] is True


async def test_discovery_advertises_prompt_create(client: Any) -> None:
    metadata = await (await client.get("/.well-known/openid-configuration")).get_json()
    assert "create" in metadata["prompt_values_supported"]


@pytest.mark.parametrize("settings_overrides", [{"accounts": {"registration_enabled": False}}], indirect=True)
async def test_registration_disabled(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    assert (await client.get("/register")).status_code == 404
    login_page = await client.get("/login")
    csrf = csrf_from(await body(login_page))
    assert 'id="register-link"' not in await body(login_page)
    posted = await client.post("/register", form={"csrf_token": csrf, "email": ADA, "password": NEW_PASSWORD})
    assert posted.status_code == 404
    await settle(app)
    assert await count_users(runtime) == 0 and smtp_server.messages == []

    world = await make_world(runtime)
    _, challenge = pkce_pair()
    started = await client.get(f"/authorize?{_authorize_query(world.spa_id, challenge, prompt='create')}")
    assert started.status_code == 303
    assert urlsplit(started.headers["Location"]).path == "/login"
    assert query_of(started.headers["Location"])["return_to"].startswith("/authorize/resume/")

    metadata = await (await client.get("/.well-known/openid-configuration")).get_json()
    assert "create" not in metadata["prompt_values_supported"]
    assert "login" in metadata["prompt_values_supported"]


# -- the password policy endpoint --------------------------------------------------------------------


async def test_password_policy_json(client: Any) -> None:
    response = await client.get("/account/password-policy")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.content_type.startswith("application/json")
    policy = await response.get_json()
    assert policy["min_length"] == 15 and policy["max_length"] == 128
    assert policy["min_length_with_mfa"] == 8
    assert "blocklist" in policy and "passwordstandard" not in str(policy)


# -- mail failure --------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"smtp_closed": True}], indirect=True)
async def test_mail_failure_does_not_change_the_answer(
    app: Any, client: Any, runtime: Any, smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await runtime.outbox.stop()  # only settle() delivers: one attempt a mail, one failure logged
    response = await register(client, ADA)
    assert response.status_code == 200
    assert CHECK_EMAIL in await body(response)
    assert await user_by_email(runtime, ADA) is not None

    await settle(app)
    [error] = [record for record in caplog.records if record.getMessage() == "could not send email"]
    assert error.levelno == logging.ERROR and error.name == "idp.accounts"
    assert vars(error)["template"] == "verify_email"
    for record in caplog.records:
        logged = record.getMessage() + " " + " ".join(str(value) for value in vars(record).values())
        assert "ada.lovelace" not in logged and "token=" not in logged
    assert smtp_server.messages == []

    # A taken address whose mail fails answers the same, too.
    await add_user(runtime, "alice@example.com")
    taken = await register(client, "alice@example.com")
    assert taken.status_code == 200 and await body(taken) == await body(response)
    await settle(app)
    errors = [vars(record)["template"] for record in caplog.records if record.getMessage() == "could not send email"]
    assert errors == ["verify_email", "already_registered"]


@pytest.mark.parametrize("settings_overrides", [{"smtp_hanging": True, "mail": {"timeout": 1.0}}], indirect=True)
async def test_answers_do_not_wait_for_the_mail_server(
    app: Any, runtime: Any, smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Mail goes out after the answer, so its round trip can't tell a fresh address from a taken
    one (ASVS 6.3.8): with a mail server that hangs for a second, every answer is still quick."""
    # Only settle() delivers (one attempt a mail): the background worker would retry a failed
    # mail once its backoff has passed, and log its failure again.
    await runtime.outbox.stop()
    await add_user(runtime, "alice@example.com")
    loop = asyncio.get_running_loop()
    timings = {}
    for label, email in [("fresh", ADA), ("taken", "alice@example.com")]:
        browser = app.test_client()
        started = loop.time()
        response = await register(browser, email)
        timings[label] = loop.time() - started
        assert response.status_code == 200 and CHECK_EMAIL in await body(response)
    for label, email in [("resend-unverified", ADA), ("resend-unknown", "nobody@example.com")]:
        browser = app.test_client()
        csrf = csrf_from(await body(await browser.get("/verify-email/resend")))
        started = loop.time()
        response = await browser.post("/verify-email/resend", form={"csrf_token": csrf, "email": email})
        timings[label] = loop.time() - started
        assert response.status_code == 200
    assert max(timings.values()) < 0.5, timings

    await settle(app)  # the deliveries time out in the background, and are logged
    errors = [vars(record)["template"] for record in caplog.records if record.getMessage() == "could not send email"]
    assert sorted(errors) == ["already_registered", "verify_email", "verify_email"]
    assert smtp_server.messages == []
    # Not dropped: all three wait in the outbox for the mail server to come back.
    assert (await outbox_stats(runtime.db)).counts["mail"]["pending"] == 3


async def test_signed_in_user_can_still_register_another_account(client: Any, runtime: Any, smtp_server: Any) -> None:
    """Registering while signed in doesn't touch the current session until the new address is confirmed."""
    await add_user(runtime, "alice@example.com")
    assert (await login(client, "alice@example.com", PASSWORD, return_to="/account")).status_code == 303
    first_session = cookie_value(client, SESSION_COOKIE)
    await register(client, ADA)
    [mail] = await smtp_server.wait_for(1)
    assert cookie_value(client, SESSION_COOKIE) == first_session
    confirmed = await confirm(client, verify_path(mail))
    assert confirmed.status_code == 303
    assert cookie_value(client, SESSION_COOKIE) not in (None, first_session)
    account = await client.get("/account")
    assert f'<strong id="account-email">{ADA}</strong>' in await body(account)
