"""Account pages for the profile, the email address, the activity trail and the data export:
the browser side of what the account API offers, through the same domain functions."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from idp.accounts import links
from idp.storage.models import AuditEvent, OneTimeToken, User, utcnow
from tests.oauth_helpers import add_user, age_session, csrf_from, login, make_world

PROFILE_FIELDS = ("name", "given_name", "family_name", "preferred_username", "locale", "zoneinfo")
FORM = "application/x-www-form-urlencoded"


class CollectingMailer:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        return None


async def body(response: Any) -> str:
    return str(await response.get_data(as_text=True))


async def profile_of(runtime: Any, user_id: str) -> dict[str, Any]:
    async with runtime.db.session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return {field: getattr(user, field) for field in (*PROFILE_FIELDS, "email", "updated_at")}


async def events_named(runtime: Any, user_id: str, name: str) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        rows = await session.execute(
            select(AuditEvent)
            .where(AuditEvent.subject_id == user_id, AuditEvent.event == name)
            .order_by(AuditEvent.id.desc())
        )
        return list(rows.scalars().all())


async def email_tokens(runtime: Any, user_id: str) -> list[OneTimeToken]:
    async with runtime.db.session() as session:
        rows = await session.execute(
            select(OneTimeToken).where(OneTimeToken.user_id == user_id, OneTimeToken.purpose == links.CHANGE_EMAIL)
        )
        return list(rows.scalars().all())


def error_fields(html: str) -> list[str]:
    return re.findall(r'<li data-field="([^"]+)">', html)


async def signed_in(client: Any, runtime: Any) -> Any:
    world = await make_world(runtime)
    runtime.accounts.mailer = CollectingMailer()
    assert (await login(client, world.email)).status_code == 303
    return world


async def profile_form(client: Any) -> tuple[str, dict[str, str]]:
    """The profile page's CSRF token and the values its form would submit unchanged."""
    page = await client.get("/account/profile")
    assert page.status_code == 200
    html = await body(page)
    values = {}
    for field in PROFILE_FIELDS[:5]:
        match = re.search(rf'id="{field}" name="{field}" value="([^"]*)"', html)
        assert match, field
        values[field] = match.group(1)
    selected = re.search(r"<option(?: value=\"([^\"]*)\")? selected>([^<]*)</option>", html)
    assert selected
    values["zoneinfo"] = selected.group(1) if selected.group(1) is not None else selected.group(2)
    return csrf_from(html), values


# -- sign-in required --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "return_to"),
    [
        ("GET", "/account/profile", "/account/profile"),
        ("POST", "/account/profile", "/account/profile"),
        ("POST", "/account/email", "/account/profile"),
        ("GET", "/account/activity", "/account/activity"),
        ("GET", "/account/export", "/account/export"),
    ],
)
async def test_pages_need_a_signed_in_session(
    client: Any, runtime: Any, method: str, path: str, return_to: str
) -> None:
    world = await make_world(runtime)
    response = await client.open(path, method=method, form={"name": "Mallory"} if method == "POST" else None)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/login?return_to={return_to}"
    assert (await profile_of(runtime, world.user_id))["name"] == "Alice Example"
    assert await events_named(runtime, world.user_id, "profile_updated") == []


async def test_account_home_links_to_the_new_pages(client: Any, runtime: Any) -> None:
    await signed_in(client, runtime)
    page = await client.get("/account")
    html = await body(page)
    assert page.status_code == 200
    for marker, href in (
        ("profile-link", "/account/profile"),
        ("activity-link", "/account/activity"),
        ("export-link", "/account/export"),
    ):
        assert re.search(rf'href="{href}" id="{marker}"', html), marker


# -- the profile form --------------------------------------------------------------------------


async def test_profile_page_shows_the_current_values(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    page = await client.get("/account/profile")
    html = await body(page)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    for marker in ('id="profile-form"', 'id="email-change-form"', 'id="new-email"', 'id="zoneinfo"'):
        assert marker in html
    assert 'id="name" name="name" value="Alice Example"' in html
    assert f'<strong id="current-email">{world.email}</strong>' in html
    assert 'id="pending-email"' not in html
    assert "<option>Europe/Paris</option>" in html


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Alice B. Example"),
        ("given_name", "Alice"),
        ("family_name", "Example"),
        ("preferred_username", "alice"),
        ("locale", "fr-CA"),
        ("zoneinfo", "Europe/Paris"),
    ],
)
async def test_profile_edit_saves_each_field(client: Any, runtime: Any, field: str, value: str) -> None:
    world = await signed_in(client, runtime)
    before = await profile_of(runtime, world.user_id)
    token, values = await profile_form(client)
    response = await client.post("/account/profile", form={**values, field: f"  {value} ", "csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/account/profile?notice=saved"
    after = await profile_of(runtime, world.user_id)
    assert after[field] == value
    assert {k: v for k, v in after.items() if k not in (field, "updated_at")} == {
        k: v for k, v in before.items() if k not in (field, "updated_at")
    }
    events = await events_named(runtime, world.user_id, "profile_updated")
    assert len(events) == 1
    assert events[0].details["fields"] == [field]
    assert events[0].client_id is None
    page = await client.get(response.headers["Location"])
    html = await body(page)
    assert 'id="profile-notice"' in html
    if field == "zoneinfo":
        assert f"<option selected>{value}</option>" in html
    else:
        assert f'id="{field}" name="{field}" value="{value}"' in html


async def test_profile_edit_clears_a_field_and_unchanged_posts_record_nothing(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    token, values = await profile_form(client)
    same = await client.post("/account/profile", form={**values, "csrf_token": token})
    assert same.status_code == 303
    assert await events_named(runtime, world.user_id, "profile_updated") == []
    cleared = await client.post("/account/profile", form={**values, "name": "  ", "csrf_token": token})
    assert cleared.status_code == 303
    assert (await profile_of(runtime, world.user_id))["name"] is None
    events = await events_named(runtime, world.user_id, "profile_updated")
    assert [event.details["fields"] for event in events] == [["name"]]


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("name", b"A" * 201, "at most 200 characters"),
        ("preferred_username", b"u" * 101, "at most 100 characters"),
        ("locale", b"not+a+locale%21", "BCP 47"),
        ("zoneinfo", b"Mars%2FOlympus_Mons", "IANA time zone"),
        ("given_name", b"Ali%0Ace", "control characters"),
        ("family_name", b"Ex%00ample", "control characters"),
        ("preferred_username", b"ali%E2%80%8Bce", "control or invisible characters"),
        ("name", b"Ada%FF%FELovelace", "not valid UTF-8"),
        ("zoneinfo", b"Europe%2FPar%C3%28is", "not valid UTF-8"),
    ],
    ids=[
        "name-too-long",
        "username-too-long",
        "bad-locale",
        "bad-zone",
        "newline",
        "nul",
        "zero-width-space",
        "name-invalid-utf8",
        "zone-invalid-utf8",
    ],
)
async def test_invalid_profile_input_is_a_400_naming_the_field_and_changes_nothing(
    client: Any, runtime: Any, field: str, raw: bytes, message: str
) -> None:
    world = await signed_in(client, runtime)
    before = await profile_of(runtime, world.user_id)
    token, values = await profile_form(client)
    # Another field changes too: a refused form must not save any part of itself.
    values["given_name"] = "Changed"
    encoded = {key: value.encode().replace(b" ", b"+").replace(b"/", b"%2F") for key, value in values.items()}
    encoded[field] = raw
    data = b"&".join(
        [b"csrf_token=" + token.encode(), *(key.encode() + b"=" + value for key, value in encoded.items())]
    )
    response = await client.post("/account/profile", data=data, headers={"Content-Type": FORM})
    html = await body(response)
    assert response.status_code == 400, html
    assert response.headers["Cache-Control"] == "no-store"
    assert error_fields(html) == [field]
    assert message in html
    assert 'id="profile-form"' in html
    assert "\x00" not in html
    assert await profile_of(runtime, world.user_id) == before
    assert await events_named(runtime, world.user_id, "profile_updated") == []


async def test_profile_post_without_csrf_token_is_refused(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    before = await profile_of(runtime, world.user_id)
    _, values = await profile_form(client)
    missing = await client.post("/account/profile", form={**values, "name": "Mallory"})
    assert missing.status_code == 403
    forged = await client.post("/account/profile", form={**values, "name": "Mallory", "csrf_token": "0" * 64})
    assert forged.status_code == 403
    assert await profile_of(runtime, world.user_id) == before
    assert await events_named(runtime, world.user_id, "profile_updated") == []


# -- changing the email address ----------------------------------------------------------------


async def test_email_change_form_mails_a_link_and_shows_the_pending_address(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    mailer = runtime.accounts.mailer
    token, _ = await profile_form(client)
    response = await client.post("/account/email", form={"email": "alice.new@example.com", "csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/account/profile?notice=email"
    rows = await email_tokens(runtime, world.user_id)
    assert [(row.email, row.used_at) for row in rows] == [("alice.new@example.com", None)]
    await runtime.outbox.drain()
    assert [(message.template, message.to) for message in mailer.sent] == [
        ("email_change_verify", "alice.new@example.com")
    ]
    assert "/account/email/confirm?token=" in mailer.sent[0].text
    assert len(await events_named(runtime, world.user_id, "email_change_requested")) == 1
    assert (await profile_of(runtime, world.user_id))["email"] == world.email  # not until confirmed
    page = await client.get(response.headers["Location"])
    html = await body(page)
    assert '<strong id="pending-email">alice.new@example.com</strong>' in html
    assert 'id="profile-notice"' in html


async def test_email_change_to_a_taken_address_answers_the_same_and_mails_nobody(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    await add_user(runtime, "bob@example.com")
    mailer = runtime.accounts.mailer
    token, _ = await profile_form(client)
    response = await client.post("/account/email", form={"email": "bob@example.com", "csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/account/profile?notice=email"
    assert [row.email for row in await email_tokens(runtime, world.user_id)] == ["bob@example.com"]
    await runtime.outbox.drain()
    assert mailer.sent == []
    assert len(await events_named(runtime, world.user_id, "email_change_requested")) == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not-an-address", ""),
        (b"alice%40example.com", "already the address"),
        (b"al%FFice%40example.org", "not valid UTF-8"),
    ],
    ids=["malformed", "own-address", "invalid-utf8"],
)
async def test_email_change_with_a_bad_address_is_a_400(client: Any, runtime: Any, raw: bytes, message: str) -> None:
    world = await signed_in(client, runtime)
    token, _ = await profile_form(client)
    response = await client.post(
        "/account/email", data=b"csrf_token=" + token.encode() + b"&email=" + raw, headers={"Content-Type": FORM}
    )
    html = await body(response)
    assert response.status_code == 400, html
    assert error_fields(html) == ["email"]
    assert message in html
    assert await email_tokens(runtime, world.user_id) == []
    await runtime.outbox.drain()
    assert runtime.accounts.mailer.sent == []
    assert await events_named(runtime, world.user_id, "email_change_requested") == []


async def test_email_change_without_csrf_token_is_refused(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    response = await client.post("/account/email", form={"email": "alice.new@example.com"})
    assert response.status_code == 403
    assert await email_tokens(runtime, world.user_id) == []
    await runtime.outbox.drain()
    assert runtime.accounts.mailer.sent == []


async def test_email_change_needs_a_recent_sign_in(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    token, _ = await profile_form(client)
    await age_session(runtime, client, 901)
    stale = await client.post("/account/email", form={"email": "alice.new@example.com", "csrf_token": token})
    assert stale.status_code == 303
    assert stale.headers["Location"] == "/login?return_to=/account/profile"
    assert await email_tokens(runtime, world.user_id) == []
    await runtime.outbox.drain()
    assert runtime.accounts.mailer.sent == []
    assert await events_named(runtime, world.user_id, "email_change_requested") == []

    # Signing in again (a new session) lets the change through.
    again = await login(client, world.email, return_to="/account/profile")
    assert again.status_code == 303
    assert again.headers["Location"] == "/account/profile"
    token, _ = await profile_form(client)
    fresh = await client.post("/account/email", form={"email": "alice.new@example.com", "csrf_token": token})
    assert fresh.status_code == 303
    assert fresh.headers["Location"] == "/account/profile?notice=email"
    assert len(await email_tokens(runtime, world.user_id)) == 1
    await runtime.outbox.drain()
    assert len(runtime.accounts.mailer.sent) == 1


# -- activity ----------------------------------------------------------------------------------


async def test_activity_page_lists_the_sign_in(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    [login_event] = await events_named(runtime, world.user_id, "login_succeeded")
    page = await client.get("/account/activity", headers={"User-Agent": "ignored-for-this-request"})
    html = await body(page)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert 'id="activity"' in html
    row = re.search(rf'<tr data-event-id="{login_event.id}" data-event="login_succeeded">(.*?)</tr>', html, re.S)
    assert row, html
    cells = [cell.strip() for cell in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)]
    assert "Signed in" in cells
    assert login_event.outcome in cells
    assert cells[0].endswith(" UTC</time>")
    assert 'data-event="user_created"' in html
    assert "Account created" in html
    assert 'id="older-link"' not in html  # two events: one page


async def test_activity_page_names_the_device_not_its_user_agent_string(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0"
    async with runtime.db.session() as session:
        session.add(AuditEvent(event="password_changed", subject_id=world.user_id, user_agent=firefox, details={}))
    html = await body(await client.get("/account/activity"))
    row = re.search(r'<tr data-event-id="\d+" data-event="password_changed">(.*?)</tr>', html, re.S)
    assert row, html
    assert "<td>Firefox 120 on Windows 10</td>" in row.group(1)
    assert "Mozilla/5.0" not in html


async def test_activity_page_paginates_with_an_older_link(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    other = await add_user(runtime, "bob@example.com")
    start = utcnow() - timedelta(hours=1)
    async with runtime.db.session() as session:
        for number in range(25):
            session.add(
                AuditEvent(
                    occurred_at=start + timedelta(minutes=number),
                    event="token_issued",
                    outcome="success",
                    subject_id=world.user_id,
                    client_id=world.web_id,
                    ip=f"192.0.2.{number + 1}",
                    user_agent=f"Mozilla/5.0 (Windows NT 10.0; rv:{100 + number}.0) Firefox/{100 + number}.0",
                    details={},
                )
            )
        session.add(AuditEvent(event="login_succeeded", subject_id=other, ip="198.51.100.7", details={}))
    async with runtime.db.session() as session:
        ids = list(
            (
                await session.execute(
                    select(AuditEvent.id).where(AuditEvent.subject_id == world.user_id).order_by(AuditEvent.id.desc())
                )
            )
            .scalars()
            .all()
        )
    assert len(ids) == 27  # user_created, login_succeeded and the 25 above

    first = await client.get("/account/activity")
    html = await body(first)
    assert first.status_code == 200
    shown = [int(value) for value in re.findall(r'<tr data-event-id="(\d+)"', html)]
    assert shown == ids[:20]
    # The newest event's row: its device as people name it (the issue-12 page shows no raw user agent).
    assert "Firefox 124 on Windows 10" in html and "192.0.2.25" in html and world.web_id in html
    assert "198.51.100.7" not in html  # another user's event
    older = re.search(r'<a href="([^"]+)" id="older-link">Older</a>', html)
    assert older
    assert older.group(1) == f"/account/activity?before={ids[19]}"

    second = await client.get(older.group(1).replace("&amp;", "&"))
    html = await body(second)
    assert second.status_code == 200
    assert [int(value) for value in re.findall(r'<tr data-event-id="(\d+)"', html)] == ids[20:]
    assert 'id="older-link"' not in html
    assert 'id="newest-link"' in html
    assert 'data-event="login_succeeded"' in html and 'data-event="user_created"' in html


@pytest.mark.parametrize("cursor", ["abc", "0", "-1", "1.5", "99999999999999999999", ""])
async def test_activity_page_refuses_a_bad_cursor(client: Any, runtime: Any, cursor: str) -> None:
    await signed_in(client, runtime)
    response = await client.get(f"/account/activity?before={cursor}")
    assert response.status_code == 400
    assert 'id="message-title"' in await body(response)


# -- export ------------------------------------------------------------------------------------


async def test_export_downloads_the_account_data_without_credentials(client: Any, runtime: Any) -> None:
    world = await signed_in(client, runtime)
    response = await client.get("/account/export")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="idp-account-export.json"'
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    raw = await body(response)
    assert "password_hash" not in raw
    assert "$argon2" not in raw
    data = json.loads(raw)
    assert data["format"] == "idp-account-export/1"
    assert data["profile"]["id"] == world.user_id
    assert data["profile"]["email"] == world.email
    assert data["profile"]["has_password"] is True
    assert {event["event"] for event in data["audit_events"]} >= {"user_created", "login_succeeded"}
    # A download changes nothing.
    assert len(await events_named(runtime, world.user_id, "login_succeeded")) == 1


async def test_a_profile_form_that_is_not_utf8_at_all_is_refused(client: Any, runtime: Any) -> None:
    """Raw non-UTF-8 bytes make the whole form unreadable, its CSRF token included: 403, not 500."""
    world = await signed_in(client, runtime)
    before = await profile_of(runtime, world.user_id)
    token, _ = await profile_form(client)
    data = b"csrf_token=" + token.encode() + b"&given_name=Ad\xff\xfea"
    response = await client.post("/account/profile", data=data, headers={"Content-Type": FORM})
    assert response.status_code == 403
    assert await profile_of(runtime, world.user_id) == before
    assert await events_named(runtime, world.user_id, "profile_updated") == []
