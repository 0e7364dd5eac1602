"""The admin pages (/admin/...): who may open them (a walk over every route), the dashboard and
its chart, finding accounts, each action (confirmation, fresh sign-in where destructive, audit row
with the administrator as actor and the account as subject), clients, keys and the audit log."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from idp.accounts.security import mfa
from idp.storage.models import AuditEvent, OAuthClient, SigningKey, User
from tests.mfa_helpers import Clock, enable_totp, text, totp_answer
from tests.oauth_helpers import PASSWORD, World, add_user, age_session, code_flow, csrf_from, login, make_world

pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


@dataclass
class Admin:
    user_id: str
    browser: Any
    victim_id: str  # an ordinary account to act on
    spa_id: str
    web_id: str


async def set_admin(runtime: Any, user_id: str) -> None:
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == user_id).values(is_admin=True))


async def sign_in_with_totp(app: Any, runtime: Any, email: str, secret: str, clock: Clock) -> Any:
    browser = app.test_client()
    first = await login(browser, email)
    assert first.status_code == 303 and first.headers["Location"] == "/login/mfa", first.headers.get("Location")
    second = await totp_answer(secret, clock)(browser)
    assert second.status_code == 303, await text(second)
    return browser


@pytest.fixture
async def admin(app: Any, runtime: Any, clock: Clock) -> Admin:
    world = await make_world(runtime, email="grace@example.com")
    await set_admin(runtime, world.user_id)
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    browser = await sign_in_with_totp(app, runtime, world.email, secret, clock)
    victim = await add_user(runtime, "bob@example.com")
    return Admin(world.user_id, browser, victim, world.spa_id, world.web_id)


async def audit_rows(runtime: Any, event: str) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)
        return list((await session.execute(query)).scalars())


async def confirm(browser: Any, path: str, **form: str) -> Any:
    """Open an action's confirmation page and submit it (with its CSRF token)."""
    page = await browser.get(path)
    assert page.status_code == 200, (path, page.status_code)
    body = await text(page)
    assert 'id="confirm-form"' in body
    return await browser.post(path, form={"csrf_token": csrf_from(body), **form})


def admin_routes(app: Any) -> list[tuple[str, str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("admin."):
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((rule.endpoint, method, rule.rule))
    return sorted(found)


def fill(rule: str, samples: dict[str, str]) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda match: samples[match.group(1)], rule)


# -- who may ---------------------------------------------------------------------------------------


async def test_every_admin_page_refuses_everyone_but_an_administrator_with_a_second_factor(
    app: Any, runtime: Any, admin: Admin, clock: Clock
) -> None:
    routes = admin_routes(app)
    assert len(routes) >= 30, routes  # the walk sees the pages (and every action's GET and POST)
    samples = {"user_id": admin.victim_id, "client_id": admin.web_id, "sid": "x" * 20}

    anonymous = app.test_client()
    plain = app.test_client()
    assert (await login(plain, "bob@example.com")).status_code == 303
    # An administrator without a second factor, and one whose session was signed in without it.
    no_factor_id = await add_user(runtime, "nofactor@example.com")
    await set_admin(runtime, no_factor_id)
    no_factor = app.test_client()
    assert (await login(no_factor, "nofactor@example.com")).status_code == 303
    later_id = await add_user(runtime, "later@example.com")
    await set_admin(runtime, later_id)
    password_only = app.test_client()
    assert (await login(password_only, "later@example.com")).status_code == 303
    await enable_totp(runtime, later_id, clock)  # added after that sign-in

    before = await audit_rows(runtime, "account_disabled")
    for endpoint, method, rule in routes:
        path = fill(rule, samples)
        seen = await anonymous.open(path, method=method, form={"confirm": "yes"})
        assert seen.status_code == 303 and seen.headers["Location"].startswith("/login?return_to="), (endpoint, method)
        seen = await plain.open(path, method=method, form={"confirm": "yes"})
        assert seen.status_code == 403, (endpoint, method, seen.status_code)
        assert "for administrators" in await text(seen)
        seen = await no_factor.open(path, method=method)
        assert seen.status_code == 303, (endpoint, method)
        assert seen.headers["Location"] == "/account/security?notice=admin-needs-mfa"
        seen = await password_only.open(path, method=method)
        assert seen.status_code == 303 and seen.headers["Location"].startswith("/login?return_to="), endpoint
    assert await audit_rows(runtime, "account_disabled") == before

    # The enrolment page says why the administrator was sent there.
    security = await no_factor.get("/account/security?notice=admin-needs-mfa")
    assert "Administrators need a second factor" in await text(security)
    # And the administrator with a second factor gets every page.
    for endpoint, method, rule in routes:
        if method == "GET" and "<" not in rule:
            page = await admin.browser.get(rule)
            assert page.status_code == 200, (endpoint, page.status_code)


async def test_the_role_is_checked_at_every_request(app: Any, runtime: Any, admin: Admin) -> None:
    assert (await admin.browser.get("/admin/users")).status_code == 200
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == admin.user_id).values(is_admin=False))
    assert (await admin.browser.get("/admin/users")).status_code == 403


# -- dashboard -------------------------------------------------------------------------------------


async def test_dashboard_counts_and_charts_the_last_day(app: Any, runtime: Any, admin: Admin) -> None:
    await add_user(runtime, "unverified@example.com", verified=False)
    await add_user(runtime, "gone@example.com", disabled=True)
    wrong = app.test_client()
    for _ in range(2):
        assert (await login(wrong, "bob@example.com", password="not the password")).status_code == 401

    page = await admin.browser.get("/admin/")
    body = await text(page)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    counts = dict(re.findall(r'data-count="(\w+)"><strong>(\d+)</strong>', body))
    assert counts["active"] == "2" and counts["unverified"] == "1" and counts["disabled"] == "1"
    assert counts["admins"] == "1" and counts["total"] == "4" and counts["locked"] == "0"
    assert counts["sessions"] == "1" and counts["clients"] == "2"
    # The chart: an SVG image with a name, drawn on the server; 24 hours, the last one with the
    # administrator's sign-in and the two failures.
    svg = body[body.index("<svg") : body.index("</svg>")]
    assert 'role="img"' in svg and "<script" not in svg and "style=" not in svg
    assert svg.count("<g><title>") == 24
    assert "2 failed attempts" in svg and "1 successful sign-ins" in svg
    hours = re.findall(r"<tr><td data-label=\"Hour\">[^<]+</td><td[^>]*>(\d+)</td><td[^>]*>(\d+)</td></tr>", body)
    assert len(hours) == 24 and hours[-1] == ("1", "2") and all(hour == ("0", "0") for hour in hours[:-1])
    # The latest security events: the administrator's second factor, among them.
    assert 'data-event="mfa_enabled"' in body


# -- users -----------------------------------------------------------------------------------------


async def test_users_are_found_filtered_and_paged(app: Any, runtime: Any, admin: Admin) -> None:
    for number in range(55):
        await add_user(runtime, f"user{number:02}@example.org")
    page = await admin.browser.get("/admin/users?q=example.org")
    body = await text(page)
    assert body.count("data-user-id=") == 50
    more = re.search(r'href="([^"]+)" id="next-page"', body)
    assert more is not None
    rest = await text(await admin.browser.get(more.group(1).replace("&amp;", "&")))
    assert rest.count("data-user-id=") == 5 and 'id="next-page"' not in rest

    with_factor = await text(await admin.browser.get("/admin/users?mfa=with"))
    assert with_factor.count("data-user-id=") == 1 and "grace@example.com" in with_factor
    admins = await text(await admin.browser.get("/admin/users?admin=yes"))
    assert admins.count("data-user-id=") == 1
    bad = await admin.browser.get("/admin/users?status=sleeping")
    assert bad.status_code == 400 and "status: must be one of" in await text(bad)
    bad = await admin.browser.get("/admin/users?cursor=not-a-cursor!")
    assert bad.status_code == 400 and "cursor" in await text(bad)


@pytest.mark.parametrize(
    "settings_overrides", [{"lockout": {"lock_after": 4, "account_lock_after": 6, "ip_failures": 8}}], indirect=True
)
async def test_locked_accounts_are_found_and_unlocked(app: Any, runtime: Any, admin: Admin) -> None:
    # Failures from many addresses lock the account for browsers it never signed in from.
    for number in range(runtime.settings.lockout.account_lock_after):
        attacker = app.test_client()
        page = await attacker.get("/login", scope_base={"client": (f"10.0.{number // 200}.{number % 200}", 1)})
        form = {"email": "bob@example.com", "password": "wrong", "csrf_token": csrf_from(await text(page))}
        await attacker.post("/login", form=form, scope_base={"client": (f"10.0.{number // 200}.{number % 200}", 1)})
    locked = await text(await admin.browser.get("/admin/users?status=locked"))
    assert locked.count("data-user-id=") == 1 and "bob@example.com" in locked
    detail = await text(await admin.browser.get(f"/admin/users/{admin.victim_id}"))
    assert "sign-in locked for" in detail
    done = await confirm(admin.browser, f"/admin/users/{admin.victim_id}/unlock")
    assert done.status_code == 303 and done.headers["Location"].endswith("?notice=unlock")
    assert "bob@example.com" not in await text(await admin.browser.get("/admin/users?status=locked"))
    [row] = await audit_rows(runtime, "account_unlocked")
    assert row.actor_id == admin.user_id and row.subject_id == admin.victim_id
    assert row.details["via"] == "admin_page"


async def test_a_users_page_shows_what_an_administrator_needs(app: Any, runtime: Any, admin: Admin) -> None:
    bob = app.test_client()
    assert (await login(bob, "bob@example.com")).status_code == 303
    page = await admin.browser.get(f"/admin/users/{admin.victim_id}")
    body = await text(page)
    assert page.status_code == 200
    assert 'id="user-email">bob@example.com' in body and 'id="user-status">active' in body
    assert body.count("data-session-id=") == 1 and 'data-event="login_succeeded"' in body
    assert 'id="action-disable"' in body and 'id="action-enable"' not in body
    assert (await admin.browser.get("/admin/users/no-such-account")).status_code == 404
    assert (await admin.browser.get("/admin/users/" + "x" * 100)).status_code == 404


ACTIONS = [
    ("disable", "account_disabled", {}),
    ("verify-email", "email_verified", {}),
    ("send-reset", "password_reset_requested", {}),
    ("end-sessions", "session_ended", {}),
    ("grant-admin", "admin_granted", {}),
]


@pytest.mark.parametrize(("action", "event", "extra"), ACTIONS)
async def test_each_action_is_confirmed_done_and_audited(
    app: Any, runtime: Any, admin: Admin, action: str, event: str, extra: dict[str, str]
) -> None:
    if action == "verify-email":
        async with runtime.db.session() as session:
            await session.execute(update(User).where(User.id == admin.victim_id).values(email_verified=False))
    bob = app.test_client()
    if action != "verify-email":  # an unverified account can't sign in
        assert (await login(bob, "bob@example.com")).status_code == 303
    path = f"/admin/users/{admin.victim_id}/{action}"
    # Following the link changes nothing: it asks first.
    assert (await admin.browser.get(path)).status_code == 200
    assert await audit_rows(runtime, event) == []
    done = await confirm(admin.browser, path, **extra)
    assert done.status_code == 303 and done.headers["Location"] == f"/admin/users/{admin.victim_id}?notice={action}"
    rows = await audit_rows(runtime, event)
    assert rows and rows[-1].subject_id == admin.victim_id and rows[-1].actor_id == admin.user_id
    assert rows[-1].details["via"] == "admin_page"
    async with runtime.db.session() as session:
        user = await session.get(User, admin.victim_id)
    assert user is not None
    if action == "disable":
        assert user.disabled
        assert (await bob.get("/account")).status_code == 303  # the session ended with the account
    if action == "grant-admin":
        assert user.is_admin
    if action == "verify-email":
        assert user.email_verified


async def test_the_owner_sees_an_administrators_action_in_their_activity(app: Any, runtime: Any, admin: Admin) -> None:
    done = await confirm(admin.browser, f"/admin/users/{admin.victim_id}/send-reset")
    assert done.status_code == 303
    bob = app.test_client()
    assert (await login(bob, "bob@example.com")).status_code == 303
    activity = await text(await bob.get("/account/activity"))
    assert 'data-event="password_reset_requested"' in activity


async def test_destructive_actions_need_a_recent_sign_in(app: Any, runtime: Any, admin: Admin, clock: Clock) -> None:
    await enable_totp(runtime, admin.victim_id, clock)
    await age_session(runtime, admin.browser, runtime.settings.admin.fresh_auth_max_age + 60)
    path = f"/admin/users/{admin.victim_id}/reset-mfa"
    page = await text(await admin.browser.get(path))
    assert 'id="password"' in page and 'id="sign-in-again"' in page
    refused = await admin.browser.post(path, form={"csrf_token": csrf_from(page)})
    assert refused.status_code == 403 and "recent sign-in" in await text(refused)
    wrong = await admin.browser.post(path, form={"csrf_token": csrf_from(page), "password": "not it"})
    assert wrong.status_code == 403
    assert (await mfa.factor_status(runtime.db, admin.victim_id)).totp
    done = await admin.browser.post(path, form={"csrf_token": csrf_from(page), "password": PASSWORD})
    assert done.status_code == 303 and done.headers["Location"].endswith("?notice=reset-mfa")
    assert not (await mfa.factor_status(runtime.db, admin.victim_id)).any
    [row] = await audit_rows(runtime, "second_factors_reset")
    assert row.actor_id == admin.user_id and row.subject_id == admin.victim_id
    # A wrong password counts as a failed sign-in of the administrator (NIST SP 800-63B §3.2.2).
    failed = await audit_rows(runtime, "login_failed")
    assert failed and failed[-1].subject_id == admin.user_id


async def test_the_last_administrator_stays(app: Any, runtime: Any, admin: Admin) -> None:
    for action in ("revoke-admin", "disable"):
        refused = await confirm(admin.browser, f"/admin/users/{admin.user_id}/{action}")
        assert refused.status_code == 409 and "last enabled administrator" in await text(refused)
    async with runtime.db.session() as session:
        user = await session.get(User, admin.user_id)
    assert user is not None and user.is_admin and not user.disabled


async def test_delete_purges_the_account(app: Any, runtime: Any, admin: Admin) -> None:
    done = await confirm(admin.browser, f"/admin/users/{admin.victim_id}/delete")
    assert done.status_code == 303 and done.headers["Location"] == "/admin/users?deleted=1"
    async with runtime.db.session() as session:
        assert await session.get(User, admin.victim_id) is None
    [row] = await audit_rows(runtime, "account_deleted")
    assert row.actor_id == admin.user_id


async def test_ending_one_session(app: Any, runtime: Any, admin: Admin) -> None:
    bob = app.test_client()
    assert (await login(bob, "bob@example.com")).status_code == 303
    body = await text(await admin.browser.get(f"/admin/users/{admin.victim_id}"))
    sid = re.search(r'data-session-id="([^"]+)"', body)
    assert sid is not None
    done = await confirm(admin.browser, f"/admin/users/{admin.victim_id}/sessions/{sid.group(1)}/end")
    assert done.status_code == 303 and done.headers["Location"].endswith("?notice=end-session")
    assert (await bob.get("/account")).status_code == 303


# -- clients ---------------------------------------------------------------------------------------


async def test_clients_are_registered_edited_and_removed(app: Any, runtime: Any, admin: Admin) -> None:
    form_page = await text(await admin.browser.get("/admin/clients/new"))
    token = csrf_from(form_page)
    base = {
        "csrf_token": token,
        "name": "Reports",
        "client_type": "confidential",
        "application_type": "web",
        "subject_type": "public",
        "redirect_uris": "https://reports.example/cb\n\nhttps://reports.example/cb2",
        "grant_authorization_code": "yes",
        "grant_refresh_token": "yes",
        "scopes": "openid profile",
        "web_origins": "",
    }
    bad = await admin.browser.post("/admin/clients/new", form={**base, "redirect_uris": "https://reports.example/#x"})
    bad_body = await text(bad)
    assert bad.status_code == 400 and "redirect_uris" in bad_body and 'aria-invalid="true"' in bad_body
    assert "Reports" in bad_body  # what was typed is kept
    bad = await admin.browser.post("/admin/clients/new", form={**base, "jwks": "{not json"})
    assert bad.status_code == 400 and "jwks: is not valid JSON" in await text(bad)
    bad = await admin.browser.post("/admin/clients/new", form={**base, "jwks": "[" * 15000})
    assert bad.status_code == 400 and "jwks: is nested too deeply" in await text(bad)
    bad = await admin.browser.post("/admin/clients/new", form={**base, "jwks": "[1]"})
    assert bad.status_code == 400 and "jwks: must be a JSON object" in await text(bad)
    bad = await admin.browser.post("/admin/clients/new", form={**base, "name": "x" * 20001})
    assert bad.status_code == 400 and "name: must be at most" in await text(bad)

    created = await admin.browser.post("/admin/clients/new", form=base)
    body = await text(created)
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    client_id = re.search(r'id="client-id">([^<]+)<', body).group(1)  # type: ignore[union-attr]
    secret = re.search(r'id="client-secret">([^<]+)<', body).group(1)  # type: ignore[union-attr]
    assert len(secret) >= 32
    detail = await text(await admin.browser.get(f"/admin/clients/{client_id}"))
    assert secret not in detail and "https://reports.example/cb2" in detail

    edit_page = await text(await admin.browser.get(f"/admin/clients/{client_id}/edit"))
    assert "https://reports.example/cb2" in edit_page
    edited = await admin.browser.post(
        f"/admin/clients/{client_id}/edit",
        form={**base, "csrf_token": csrf_from(edit_page), "name": "Reports 2", "first_party": "yes"},
    )
    assert edited.status_code == 303 and edited.headers["Location"].endswith("?notice=updated")
    async with runtime.db.session() as session:
        stored = await session.get(OAuthClient, client_id)
    assert stored is not None and stored.name == "Reports 2" and stored.first_party

    rotated = await confirm(admin.browser, f"/admin/clients/{client_id}/rotate-secret")
    new_secret = re.search(r'id="client-secret">([^<]+)<', await text(rotated))
    assert rotated.status_code == 200 and new_secret and new_secret.group(1) != secret

    disabled = await confirm(admin.browser, f"/admin/clients/{client_id}/disable")
    assert disabled.status_code == 303 and disabled.headers["Location"].endswith("?notice=disabled")
    enabled = await confirm(admin.browser, f"/admin/clients/{client_id}/enable")
    assert enabled.headers["Location"].endswith("?notice=enabled")
    deleted = await confirm(admin.browser, f"/admin/clients/{client_id}/delete")
    assert deleted.status_code == 303
    async with runtime.db.session() as session:
        assert await session.get(OAuthClient, client_id) is None
    events = [row.event for row in await audit_rows(runtime, "client_created")]
    events += [row.event for row in await audit_rows(runtime, "client_updated")]
    events += [row.event for row in await audit_rows(runtime, "client_secret_rotated")]
    events += [row.event for row in await audit_rows(runtime, "client_disabled")]
    events += [row.event for row in await audit_rows(runtime, "client_enabled")]
    events += [row.event for row in await audit_rows(runtime, "client_deleted")]
    assert len(events) >= 6 + 2  # the fixture's two clients were created too
    for name in ("client_updated", "client_secret_rotated", "client_disabled", "client_enabled", "client_deleted"):
        [row] = await audit_rows(runtime, name)
        assert row.actor_id == admin.user_id and row.details["via"] == "admin_page", name

    listing = await text(await admin.browser.get("/admin/clients?q=web"))
    assert listing.count("data-client-id=") == 1


async def test_deleting_a_client_ends_its_tokens(app: Any, runtime: Any, admin: Admin) -> None:
    world_browser = app.test_client()
    assert (await login(world_browser, "bob@example.com")).status_code == 303
    bob = World(admin.victim_id, "bob@example.com", admin.spa_id, admin.web_id, "")
    tokens = await code_flow(world_browser, bob, confidential=False)
    userinfo = await app.test_client().get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200
    assert (await confirm(admin.browser, f"/admin/clients/{admin.spa_id}/delete")).status_code == 303
    userinfo = await app.test_client().get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401


# -- keys and the audit log ------------------------------------------------------------------------


async def test_keys_are_listed_rotated_and_purged(app: Any, runtime: Any, admin: Admin) -> None:
    before = await text(await admin.browser.get("/admin/keys"))
    assert before.count('data-status="active"') == len(runtime.settings.keys.algorithms)
    rotated = await confirm(admin.browser, "/admin/keys/rotate")
    assert rotated.status_code == 303 and rotated.headers["Location"].endswith("?notice=rotated")
    after = await text(await admin.browser.get("/admin/keys"))
    # The new keys are published first; the current ones sign on until they hand over.
    algorithms = len(runtime.settings.keys.algorithms)
    assert after.count('data-status="next"') == algorithms
    assert after.count('data-status="active"') == algorithms and "active until" in after
    # Once the hand-over time has passed, the old ones are retiring (still published).
    async with runtime.db.session() as session:
        await session.execute(
            update(SigningKey).where(SigningKey.status == "retired").values(retired_at=datetime.now(UTC))
        )
    after = await text(await admin.browser.get("/admin/keys"))
    assert after.count('data-status="retiring"') == algorithms
    assert after.count('data-status="active"') == algorithms
    assert "retiring until" in after
    [row] = await audit_rows(runtime, "signing_keys_rotated")
    assert row.actor_id == admin.user_id and row.details["via"] == "admin_page"
    purged = await confirm(admin.browser, "/admin/keys/purge")
    assert purged.headers["Location"].endswith("?notice=none-purged")  # still published
    # Once a retired key's publication window has ended, it shows as expired and purging deletes it.
    async with runtime.db.session() as session:
        await session.execute(
            update(SigningKey).where(SigningKey.status == "retired").values(publish_until=datetime.now(UTC))
        )
    expired = await text(await admin.browser.get("/admin/keys"))
    assert expired.count('data-status="expired"') == len(runtime.settings.keys.algorithms)
    purged = await confirm(admin.browser, "/admin/keys/purge")
    assert purged.headers["Location"].endswith("?notice=purged")
    assert 'data-status="expired"' not in await text(await admin.browser.get("/admin/keys"))


async def test_the_audit_log_is_filtered_paged_and_exported(app: Any, runtime: Any, admin: Admin) -> None:
    wrong = app.test_client()
    for _ in range(3):
        await login(wrong, "nobody@example.com", password="not the password")
    page = await text(await admin.browser.get("/admin/audit?event=login_failed&outcome=failure"))
    assert page.count('data-event="login_failed"') == 3 and 'data-event="login_succeeded"' not in page
    every = await text(await admin.browser.get("/admin/audit"))
    assert 'data-event="login_succeeded"' in every
    bad = await admin.browser.get("/admin/audit?since=yesterday")
    assert bad.status_code == 400 and "since: must be an ISO 8601" in await text(bad)
    bad = await admin.browser.get("/admin/audit?before=12abc")
    assert bad.status_code == 400

    exported = await admin.browser.get("/admin/audit/export.csv?event=login_failed")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert exported.headers["Content-Disposition"] == 'attachment; filename="audit.csv"'
    rows = list(csv.DictReader(io.StringIO(await text(exported))))
    assert len(rows) == 3 and {row["event"] for row in rows} == {"login_failed"}
    ids = [int(row["id"]) for row in rows]
    assert ids == sorted(ids)  # oldest first
    bad = await admin.browser.get("/admin/audit/export.csv?outcome=maybe")
    assert bad.status_code == 400


async def test_audit_pages_go_back_in_time(app: Any, runtime: Any, admin: Admin) -> None:
    wrong = app.test_client()
    for _ in range(55):
        await login(wrong, f"n{_}@example.com", password="not the password")
    first = await text(await admin.browser.get("/admin/audit?event=login_failed"))
    assert first.count("data-event-id=") == 50
    older = re.search(r'href="([^"]+)" id="older-page"', first)
    assert older is not None
    second = await text(await admin.browser.get(older.group(1).replace("&amp;", "&")))
    assert second.count("data-event-id=") == 5
    first_ids = set(re.findall(r'data-event-id="(\d+)"', first))
    assert not first_ids & set(re.findall(r'data-event-id="(\d+)"', second))
