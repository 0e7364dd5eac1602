"""Password reset by emailed link and password change, with mail delivered through a real SMTP
server on loopback.

Covers ASVS 6.2.2/6.2.3 (change needs current and new password), 6.2.4 (the policy on every new
password), 6.3.7 (notification after a credential change), 6.3.8 (the reset request doesn't reveal
accounts), 6.4.1 (single-use, expiring links), 7.4.3 (other sessions end) and the protocol side of
a reset: refresh tokens revoked, access tokens refused at /userinfo.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from idp.accounts import links
from idp.storage.models import AuditEvent, OneTimeToken, User, utcnow
from tests.mail_flows import (  # noqa: F401 - fixtures are found by name
    SENDER,
    body,
    closed_smtp_port,
    hanging_smtp_port,
    settings_overrides,
    settle,
    take_new_device_notice,
    text_of,
    token_of,
)
from tests.oauth_helpers import (
    PASSWORD,
    add_user,
    basic,
    code_flow,
    cookie_value,
    csrf_from,
    login,
    make_world,
)
from tests.smtp import ReceivedMessage

ISSUER = "http://127.0.0.1:8000"
SESSION_COOKIE = "idp_session"  # http issuer in tests: no __Host- prefix
ALICE = "alice@example.com"
NEW_PASSWORD = "copper-walrus-violin-tundra"
RESET_LINK = re.compile(re.escape(ISSUER) + r"(/reset-password\?token=[A-Za-z0-9_\-]+)")
CHECK_EMAIL = '<h1 id="message-title">Check your email</h1>'
CHANGED = '<h1 id="message-title">Password changed</h1>'
INVALID_LINK = '<h1 id="message-title">This link can&#39;t be used</h1>'


# -- helpers ---------------------------------------------------------------------------------------


def reset_path(received: ReceivedMessage) -> str:
    match = RESET_LINK.search(text_of(received))
    assert match, "no reset link in the email"
    return match.group(1)


async def request_reset(client: Any, email: str) -> Any:
    page = await client.get("/forgot-password")
    assert page.status_code == 200
    html = await body(page)
    assert 'id="email-form"' in html and 'name="email"' in html
    return await client.post("/forgot-password", form={"csrf_token": csrf_from(html), "email": email})


async def open_reset_link(client: Any, path: str) -> str:
    """GET the emailed link; returns the CSRF token of the form it shows."""
    page = await client.get(path)
    assert page.status_code == 200, await body(page)
    html = await body(page)
    assert 'id="password-form"' in html and 'id="new_password"' in html
    assert 'id="current_password"' not in html
    assert f'name="token" value="{token_of(path)}"' in html
    return csrf_from(html)


async def submit_reset(client: Any, path: str, new_password: str, csrf: str | None = None) -> Any:
    csrf = csrf or await open_reset_link(client, path)
    return await client.post(
        "/reset-password", form={"csrf_token": csrf, "token": token_of(path), "new_password": new_password}
    )


async def change(client: Any, current: str, new: str) -> Any:
    page = await client.get("/account/password")
    assert page.status_code == 200
    html = await body(page)
    assert 'id="password-form"' in html and 'id="current_password"' in html
    return await client.post(
        "/account/password",
        form={"csrf_token": csrf_from(html), "current_password": current, "new_password": new},
    )


async def signed_in(client: Any) -> bool:
    response = await client.get("/account")
    if response.status_code == 200:
        return True
    assert response.status_code == 303 and response.headers["Location"].startswith("/login")
    return False


def error_fields(html: str) -> list[str]:
    return re.findall(r'<li data-field="([^"]+)">', html)


async def user_row(runtime: Any, user_id: str) -> User:
    async with runtime.db.session() as session:
        user = await session.get(User, user_id)
    assert user is not None
    return user


async def reset_rows(runtime: Any) -> list[OneTimeToken]:
    async with runtime.db.session() as session:
        query = select(OneTimeToken).where(OneTimeToken.purpose == links.RESET_PASSWORD)
        return list((await session.execute(query)).scalars())


async def audit(runtime: Any, event: str) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event == event))).scalars())


def _comparable_headers(response: Any) -> dict[str, str]:
    skip = {"x-request-id", "date", "set-cookie"}
    return {name.lower(): value for name, value in response.headers.items() if name.lower() not in skip}


# -- password reset --------------------------------------------------------------------------------


async def test_reset_ends_everything_issued_under_the_old_password(
    app: Any, client: Any, runtime: Any, smtp_server: Any
) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)  # this browser is signed in and holds tokens
    laptop = app.test_client()
    assert (await login(laptop, ALICE, return_to="/account")).status_code == 303
    assert await signed_in(client) and await signed_in(laptop)
    await take_new_device_notice(smtp_server, ALICE)
    before = await user_row(runtime, world.user_id)

    requester = app.test_client()
    requested = await request_reset(requester, ALICE)
    assert requested.status_code == 200 and CHECK_EMAIL in await body(requested)
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == [ALICE]
    assert mail.message["Subject"] == "Reset your password"
    assert "30 minutes" in text_of(mail)
    path = reset_path(mail)
    [row] = await reset_rows(runtime)
    assert row.user_id == world.user_id and row.expires_at - row.created_at == timedelta(minutes=30)

    # Opening the link (twice: mail scanners) doesn't use it up.
    csrf = await open_reset_link(requester, path)
    await open_reset_link(requester, path)
    [row] = await reset_rows(runtime)
    assert row.used_at is None

    # A password the policy refuses: 400 with the rule, the link stays usable.
    for weak, rule_text in [
        ("too-short", "Use at least 15 characters"),
        ("passwordstandard", "commonly used or leaked"),
        ("alice-in-wonderland-forever", "must not contain your email address or your name"),
    ]:
        refused = await submit_reset(requester, path, weak, csrf)
        assert refused.status_code == 400
        html = await body(refused)
        assert error_fields(html) == ["new_password"] and rule_text in html
        assert 'id="password-form"' in html and f'name="token" value="{token_of(path)}"' in html
    [row] = await reset_rows(runtime)
    assert row.used_at is None
    assert (await user_row(runtime, world.user_id)).password_hash == before.password_hash

    done = await submit_reset(requester, path, NEW_PASSWORD, csrf)
    assert done.status_code == 200
    assert CHANGED in await body(done)
    assert 'id="message-link" href="/login"' in await body(done)
    after = await user_row(runtime, world.user_id)
    assert after.password_hash != before.password_hash and after.password_hash.startswith("$argon2id$")
    assert after.password_changed_at is not None

    # Every session of the user ended, in every browser.
    assert not await signed_in(client)
    assert not await signed_in(laptop)
    # Refresh tokens revoked, access tokens refused.
    refreshed = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert refreshed.status_code == 400 and (await refreshed.get_json())["error"] == "invalid_grant"
    userinfo = await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401

    # The old password no longer works; the new one does.
    old = await login(app.test_client(), ALICE, PASSWORD)
    assert old.status_code == 401 and 'id="login-error"' in await body(old)
    assert (await login(app.test_client(), ALICE, NEW_PASSWORD)).status_code == 303
    await take_new_device_notice(smtp_server, ALICE)

    # The owner is told, with a way back if it wasn't them.
    _, notice = await smtp_server.wait_for(2)
    assert notice.rcpt_tos == [ALICE]
    assert notice.message["Subject"] == "Your password was changed"
    assert f"{ISSUER}/forgot-password" in text_of(notice)
    assert NEW_PASSWORD not in text_of(notice)

    # The link was single-use.
    again = await requester.post(
        "/reset-password",
        form={"csrf_token": csrf, "token": token_of(path), "new_password": "another-good-long-phrase"},
    )
    assert again.status_code == 400 and INVALID_LINK in await body(again)
    assert (await requester.get(path)).status_code == 400
    await settle(app)

    assert [event.subject_id for event in await audit(runtime, "password_reset_requested")] == [world.user_id]
    [completed] = await audit(runtime, "password_reset")
    assert completed.subject_id == world.user_id and completed.details["sessions_ended"] == 2
    assert len(smtp_server.messages) == 2


async def test_reset_link_expires(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    before = await user_row(runtime, user_id)
    await request_reset(client, ALICE)
    [mail] = await smtp_server.wait_for(1)
    path = reset_path(mail)
    csrf = await open_reset_link(client, path)
    async with runtime.db.session() as session:
        await session.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))

    page = await client.get(path)
    assert page.status_code == 400 and INVALID_LINK in await body(page)
    assert 'id="message-link" href="/forgot-password"' in await body(page)
    posted = await submit_reset(client, path, NEW_PASSWORD, csrf)
    assert posted.status_code == 400 and INVALID_LINK in await body(posted)
    assert (await user_row(runtime, user_id)).password_hash == before.password_hash
    await settle(app)
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("settings_overrides", [{"accounts": {"reset_ttl": 300}}], indirect=True)
async def test_reset_ttl_setting_sets_the_lifetime(client: Any, runtime: Any, smtp_server: Any) -> None:
    await add_user(runtime, ALICE)
    await request_reset(client, ALICE)
    [mail] = await smtp_server.wait_for(1)
    assert "5 minutes" in text_of(mail)
    [row] = await reset_rows(runtime)
    assert row.expires_at - row.created_at == timedelta(seconds=300)


@pytest.mark.parametrize("token", ["", "x", "A" * 43, "A" * 500])
async def test_unknown_reset_tokens_are_refused(client: Any, token: str) -> None:
    page = await client.get("/reset-password", query_string={"token": token})
    assert page.status_code == 400 and INVALID_LINK in await body(page)
    csrf = csrf_from(await body(await client.get("/forgot-password")))
    posted = await client.post(
        "/reset-password", form={"csrf_token": csrf, "token": token, "new_password": NEW_PASSWORD}
    )
    assert posted.status_code == 400 and INVALID_LINK in await body(posted)


async def test_a_verification_link_is_not_a_reset_link(client: Any, runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE, verified=False)
    token = await links.issue(runtime.db, purpose=links.VERIFY_EMAIL, user_id=user_id, ttl=600, email=ALICE)
    assert (await client.get("/reset-password", query_string={"token": token})).status_code == 400
    csrf = csrf_from(await body(await client.get("/forgot-password")))
    posted = await client.post(
        "/reset-password", form={"csrf_token": csrf, "token": token, "new_password": NEW_PASSWORD}
    )
    assert posted.status_code == 400
    assert (await client.get("/verify-email", query_string={"token": token})).status_code == 200


async def test_only_the_newest_reset_link_works(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    await add_user(runtime, ALICE)
    await request_reset(client, ALICE)
    await settle(app)
    await request_reset(client, ALICE)
    first, second = await smtp_server.wait_for(2)
    assert (await client.get(reset_path(first))).status_code == 400
    assert (await submit_reset(client, reset_path(second), NEW_PASSWORD)).status_code == 200


async def test_reset_needs_a_valid_csrf_token(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    before = await user_row(runtime, user_id)
    await request_reset(client, ALICE)
    [mail] = await smtp_server.wait_for(1)
    path = reset_path(mail)
    refused = await client.post("/reset-password", form={"token": token_of(path), "new_password": NEW_PASSWORD})
    assert refused.status_code == 403
    assert (await user_row(runtime, user_id)).password_hash == before.password_hash
    [row] = await reset_rows(runtime)
    assert row.used_at is None
    # The forgot-password form needs one too.
    assert (await client.post("/forgot-password", form={"email": ALICE})).status_code == 403
    await settle(app)
    assert len(smtp_server.messages) == 1


async def test_reset_also_verifies_an_unverified_address(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    user_id = await add_user(runtime, ALICE, verified=False)
    assert (await login(app.test_client(), ALICE, PASSWORD)).status_code == 401
    await request_reset(client, ALICE)
    [mail] = await smtp_server.wait_for(1)
    assert (await submit_reset(client, reset_path(mail), NEW_PASSWORD)).status_code == 200
    assert (await user_row(runtime, user_id)).email_verified is True
    assert (await login(app.test_client(), ALICE, NEW_PASSWORD)).status_code == 303


async def test_forgot_password_does_not_reveal_accounts(app: Any, runtime: Any, smtp_server: Any) -> None:
    await add_user(runtime, ALICE)
    await add_user(runtime, "disabled@example.com", disabled=True)
    answers = []
    for address in (ALICE, "nobody@example.com", "disabled@example.com", "not an address", ""):
        response = await request_reset(app.test_client(), address)
        answers.append((response.status_code, await body(response), _comparable_headers(response)))
    assert answers[0][0] == 200 and CHECK_EMAIL in answers[0][1]
    assert all(answer == answers[0] for answer in answers)
    await settle(app)
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == [ALICE]
    assert len(smtp_server.messages) == 1
    assert len(await reset_rows(runtime)) == 1


@pytest.mark.parametrize("settings_overrides", [{"smtp_hanging": True, "mail": {"timeout": 1.0}}], indirect=True)
async def test_forgot_password_answers_before_any_mail_is_sent(
    app: Any, runtime: Any, smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The look-up, the link and the mail happen after the answer: with a mail server that hangs
    for a second, the answer for a known address is as quick as for an unknown one (ASVS 6.3.8)."""
    await runtime.outbox.stop()  # only settle() delivers: one attempt, one failure logged
    await add_user(runtime, ALICE)
    loop = asyncio.get_running_loop()
    timings = {}
    for address in (ALICE, "nobody@example.com"):
        browser = app.test_client()
        csrf = csrf_from(await body(await browser.get("/forgot-password")))
        started = loop.time()
        response = await browser.post("/forgot-password", form={"csrf_token": csrf, "email": address})
        timings[address] = loop.time() - started
        assert response.status_code == 200 and CHECK_EMAIL in await body(response)
    assert max(timings.values()) < 0.5, timings

    await settle(app)
    [error] = [record for record in caplog.records if record.getMessage() == "could not send email"]
    assert vars(error)["template"] == "password_reset" and "alice" not in vars(error)["error"]
    assert len(await reset_rows(runtime)) == 1  # the link was made, only its mail failed


async def test_forgot_password_for_an_address_the_mailer_cannot_carry(
    app: Any, runtime: Any, smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An admin-created account whose address has non-ASCII before the @: the answer stays the same
    (no 500 that would single out the account), the failure is logged."""
    await add_user(runtime, "josé@example.org")
    known = await request_reset(app.test_client(), "josé@example.org")
    unknown = await request_reset(app.test_client(), "maría@example.org")
    assert known.status_code == unknown.status_code == 200
    assert await body(known) == await body(unknown)
    await settle(app)
    assert smtp_server.messages == []
    [error] = [record for record in caplog.records if record.getMessage() == "could not send email"]
    assert vars(error)["template"] == "password_reset"
    assert not [record for record in caplog.records if "background task failed" in record.getMessage()]


# -- password change -------------------------------------------------------------------------------


async def test_change_password(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    assert (await login(client, ALICE, return_to="/account")).status_code == 303
    phone = app.test_client()
    assert (await login(phone, ALICE, return_to="/account")).status_code == 303
    await take_new_device_notice(smtp_server, ALICE)
    before = await user_row(runtime, user_id)

    for current, new, field, text in [
        ("wrong-current-password", NEW_PASSWORD, "current_password", "The current password is incorrect."),
        ("", NEW_PASSWORD, "current_password", "The current password is incorrect."),
        (PASSWORD, PASSWORD, "new_password", "must differ from the current one"),
        (PASSWORD, "short-phrase", "new_password", "Use at least 15 characters"),
        (PASSWORD, "passwordstandard", "new_password", "commonly used or leaked"),
        (PASSWORD, "aaaaaaaaaaaaaaaaaaaa", "new_password", "too easy to guess"),
        (PASSWORD, "", "new_password", "Use at least 15 characters"),
    ]:
        refused = await change(client, current, new)
        assert refused.status_code == 400, (current, new)
        html = await body(refused)
        assert error_fields(html) == [field] and text in html, html
    assert (await user_row(runtime, user_id)).password_hash == before.password_hash
    assert await signed_in(client) and await signed_in(phone)
    assert smtp_server.messages == []

    done = await change(client, PASSWORD, NEW_PASSWORD)
    assert done.status_code == 200
    html = await body(done)
    assert CHANGED in html and "1 other session(s) were signed out." in html
    assert await signed_in(client)  # this browser stays signed in
    assert not await signed_in(phone)  # the other one is signed out (ASVS 7.4.3)
    after = await user_row(runtime, user_id)
    assert after.password_hash != before.password_hash
    assert after.password_changed_at is not None and after.password_changed_at != before.password_changed_at

    [notice] = await smtp_server.wait_for(1)
    assert notice.rcpt_tos == [ALICE] and notice.message["Subject"] == "Your password was changed"
    [changed] = await audit(runtime, "password_changed")
    assert changed.subject_id == user_id and changed.details["sessions_ended"] == 1

    assert (await login(app.test_client(), ALICE, PASSWORD)).status_code == 401
    assert (await login(app.test_client(), ALICE, NEW_PASSWORD)).status_code == 303


async def test_change_password_needs_a_session_and_csrf(app: Any, client: Any, runtime: Any, smtp_server: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    before = await user_row(runtime, user_id)
    anonymous = await client.get("/account/password")
    assert anonymous.status_code == 303 and anonymous.headers["Location"] == "/login?return_to=/account/password"
    posted = await client.post(
        "/account/password", form={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "csrf_token": "x"}
    )
    assert posted.status_code == 303 and posted.headers["Location"].startswith("/login")

    await login(client, ALICE)
    assert cookie_value(client, SESSION_COOKIE)
    forged = await client.post(
        "/account/password", form={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "csrf_token": "0" * 64}
    )
    assert forged.status_code == 403
    assert (await user_row(runtime, user_id)).password_hash == before.password_hash
    assert smtp_server.messages == []
