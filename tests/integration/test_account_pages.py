"""Account pages that finish flows started elsewhere: email-change confirmation and deletion
(page and API)."""

from __future__ import annotations

import re

from sqlalchemy import select

from idp.accounts import links
from idp.storage.models import User
from tests.oauth_helpers import PASSWORD, basic, code_flow, csrf_from, login, make_world


class CollectingMailer:
    def __init__(self) -> None:
        self.sent: list = []

    async def send(self, message) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        return None


async def test_email_change_link_confirms_only_on_post(client, runtime) -> None:
    from idp.accounts.profile import profile

    world = await make_world(runtime)
    mailer = CollectingMailer()
    runtime.accounts.mailer = mailer
    await profile.request_email_change(runtime.accounts, world.user_id, "alice.new@example.com")
    await runtime.outbox.drain()
    link = re.search(r"https?://\S+/account/email/confirm\?token=[\w-]+", mailer.sent[-1].text).group(0)
    path = link.split("127.0.0.1:8000", 1)[1]

    for _ in range(2):  # a mail scanner's GET does not use the link
        page = await client.get(path)
        assert page.status_code == 200
        assert "alice.new@example.com" in await page.get_data(as_text=True)
    html = await page.get_data(as_text=True)
    token = re.search(r'name="token" value="([^"]+)"', html).group(1)
    done = await client.post("/account/email/confirm", form={"token": token, "csrf_token": csrf_from(html)})
    assert done.status_code == 200
    async with runtime.db.session() as session:
        user = await session.get(User, world.user_id)
    assert user.email == "alice.new@example.com" and user.email_verified
    again = await client.post("/account/email/confirm", form={"token": token, "csrf_token": csrf_from(html)})
    assert again.status_code == 400
    assert (await client.get("/account/email/confirm?token=nope")).status_code == 400


async def test_email_change_confirmation_needs_csrf(client, runtime) -> None:
    world = await make_world(runtime)
    token = await links.issue(
        runtime.db, purpose=links.CHANGE_EMAIL, user_id=world.user_id, ttl=600, email="x@example.com"
    )
    response = await client.post("/account/email/confirm", form={"token": token})
    assert response.status_code == 403
    async with runtime.db.session() as session:
        assert (await session.get(User, world.user_id)).email == world.email


async def test_delete_page_requires_password_and_confirmation(client, runtime) -> None:
    world = await make_world(runtime)
    runtime.accounts.mailer = CollectingMailer()
    assert (await login(client, world.email)).status_code == 303
    page = await client.get("/account/delete")
    html = await page.get_data(as_text=True)
    token = csrf_from(html)

    unconfirmed = await client.post("/account/delete", form={"csrf_token": token, "password": PASSWORD})
    assert unconfirmed.status_code == 400
    wrong = await client.post(
        "/account/delete", form={"csrf_token": token, "password": "not-the-password-at-all", "confirm": "delete"}
    )
    assert wrong.status_code == 400
    assert "The password is not correct." in await wrong.get_data(as_text=True)
    async with runtime.db.session() as session:
        assert await session.get(User, world.user_id) is not None

    deleted = await client.post(
        "/account/delete", form={"csrf_token": token, "password": PASSWORD, "confirm": "delete"}
    )
    assert deleted.status_code == 200
    assert "Account deleted" in await deleted.get_data(as_text=True)
    async with runtime.db.session() as session:
        assert await session.get(User, world.user_id) is None
    after = await client.get("/account")
    assert after.status_code == 303 and after.headers["Location"].startswith("/login")


async def test_delete_page_without_session_redirects_to_login(client, runtime) -> None:
    response = await client.get("/account/delete")
    assert response.status_code == 303 and response.headers["Location"].startswith("/login")


async def test_api_delete_account(client, runtime) -> None:
    from idp.storage.models import OAuthClient

    world = await make_world(runtime)
    runtime.accounts.mailer = CollectingMailer()
    async with runtime.db.session() as session:
        (await session.get(OAuthClient, world.web_id)).first_party = True
    tokens = await code_flow(client, world)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

    wrong = await client.delete("/api/account", json={"password": "nope-nope-nope-nope"}, headers=bearer)
    assert wrong.status_code == 400 and (await wrong.get_json())["field"] == "password"
    missing = await client.delete("/api/account", json={}, headers=bearer)
    assert missing.status_code == 400
    extra = await client.delete("/api/account", json={"password": PASSWORD, "force": True}, headers=bearer)
    assert extra.status_code == 400
    async with runtime.db.session() as session:
        assert await session.get(User, world.user_id) is not None

    done = await client.delete("/api/account", json={"password": PASSWORD}, headers=bearer)
    assert done.status_code == 204
    async with runtime.db.session() as session:
        assert (await session.execute(select(User).where(User.id == world.user_id))).first() is None
    # The token that deleted the account no longer works anywhere.
    assert (await client.get("/userinfo", headers=bearer)).status_code == 401
    refreshed = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert (await refreshed.get_json())["error"] == "invalid_grant"


async def test_audit_rows_name_the_acting_user(client, runtime) -> None:
    from idp.storage.models import AuditEvent

    world = await make_world(runtime)
    assert (await login(client, world.email)).status_code == 303
    page = await client.get("/account/password")
    changed = await client.post(
        "/account/password",
        form={
            "csrf_token": csrf_from(await page.get_data(as_text=True)),
            "current_password": PASSWORD,
            "new_password": "copper-willow-harbor-3391",
        },
    )
    assert changed.status_code == 200
    async with runtime.db.session() as session:
        row = (await session.execute(select(AuditEvent).where(AuditEvent.event == "password_changed"))).scalar_one()
    assert row.actor_id == world.user_id and row.subject_id == world.user_id
    assert row.ip is not None


async def test_old_address_is_told_of_an_email_change(client, runtime) -> None:
    from idp.accounts.profile import profile

    world = await make_world(runtime)
    mailer = CollectingMailer()
    runtime.accounts.mailer = mailer
    await profile.request_email_change(runtime.accounts, world.user_id, "alice.moved@example.com")
    await runtime.outbox.drain()
    token = re.search(r"token=([\w-]+)", mailer.sent[-1].text).group(1)
    assert await profile.confirm_email_change(runtime.accounts, token) == world.user_id
    await runtime.outbox.drain()
    notice = mailer.sent[-1]
    assert notice.to == world.email
    assert "alice.moved@example.com" in notice.text and "/forgot-password" in notice.text


async def test_email_change_and_deletion_mail_through_real_smtp(client, runtime, smtp_server) -> None:
    """The email-change link, the old-address notice and the deletion notice over SMTP on loopback."""
    from idp.accounts.profile import deletion, profile
    from idp.mail import SmtpMailer

    world = await make_world(runtime)
    runtime.accounts.mailer = SmtpMailer(
        "idp <no-reply@idp.test>", host=smtp_server.host, port=smtp_server.port, security="none"
    )
    await profile.request_email_change(runtime.accounts, world.user_id, "alice.smtp@example.com")
    [link_mail] = await smtp_server.wait_for(1)
    assert link_mail.rcpt_tos == ["alice.smtp@example.com"]
    text = link_mail.message.get_body(preferencelist=("plain",)).get_content()
    token = re.search(r"/account/email/confirm\?token=([\w-]+)", text).group(1)
    assert await profile.confirm_email_change(runtime.accounts, token) == world.user_id
    messages = await smtp_server.wait_for(2)
    assert messages[1].rcpt_tos == [world.email]

    await deletion.delete_account(runtime.accounts, world.user_id, password=PASSWORD)
    messages = await smtp_server.wait_for(3)
    assert messages[2].rcpt_tos == ["alice.smtp@example.com"]
    assert "deleted" in messages[2].message["Subject"].lower()
