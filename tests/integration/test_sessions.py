"""Browser sessions at the IdP, on the configured key-value store (in-process, or Redis when
IDP_TEST_REDIS_URL is set): the per-user limit and its two policies, the sessions page and API
(ending a session signs that browser out at its next request), the sid kept across a second
sign-in, rotation at privilege changes, device tracking and its notice, and what ending a session
does to relying parties (back-channel logout) and to the tokens issued within it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from idp.accounts import account_status
from idp.oauth.clients import ClientSpec, create_client
from idp.oauth.tokens import ID_TOKEN_TYP
from idp.storage.models import AuditEvent, KnownDevice, User
from tests.backchannel_helpers import (
    Recorder,
    bcl_client,
    install_notifier,
    session_cookie,
    sign_in_through,
    verify_logout_token,
)
from tests.mfa_helpers import audit, outbox_subjects, text
from tests.oauth_helpers import (
    PASSWORD,
    WEB_REDIRECT,
    World,
    add_user,
    basic,
    code_flow,
    csrf_from,
    make_world,
)

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
NEW_SIGN_IN = "New sign-in to your account"


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


@pytest.fixture
async def world(runtime: Any) -> World:
    return await make_world(runtime)


class Browser:
    """A test client with its own cookies, user agent and address."""

    def __init__(self, app: Any, user_agent: str = FIREFOX, ip: str = "198.51.100.1") -> None:
        self.client = app.test_client()
        self.headers = {"User-Agent": user_agent}
        self.scope = {"client": (ip, 50000)}

    async def get(self, path: str) -> Any:
        return await self.client.get(path, headers=self.headers, scope_base=self.scope)

    async def post(self, path: str, form: dict[str, str]) -> Any:
        return await self.client.post(path, form=form, headers=self.headers, scope_base=self.scope)

    async def sign_in(self, email: str, password: str = PASSWORD) -> Any:
        page = await self.get("/login?return_to=/account")
        form = {
            "email": email,
            "password": password,
            "csrf_token": csrf_from(await text(page)),
            "return_to": "/account",
        }
        return await self.post("/login", form)

    async def signed_in(self) -> bool:
        response = await self.get("/account")
        return response.status_code == 200

    @property
    def cookie(self) -> str | None:
        return session_cookie(self.client)


async def signed_in_browser(app: Any, world: World, **kwargs: Any) -> Browser:
    browser = Browser(app, **kwargs)
    assert (await browser.sign_in(world.email)).status_code == 303
    return browser


async def ended_reasons(runtime: Any, user_id: str) -> list[str]:
    return [event.details["reason"] for event in await audit(runtime, user_id, "session_ended")]


# -- the per-user limit --------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"sessions": {"max_per_user": 2}}], indirect=True)
async def test_beyond_the_limit_the_oldest_session_ends(app: Any, runtime: Any, world: World) -> None:
    first = await signed_in_browser(app, world, ip="198.51.100.1")
    second = await signed_in_browser(app, world, ip="198.51.100.2")
    assert await first.signed_in() and await second.signed_in()
    third = await signed_in_browser(app, world, ip="198.51.100.3")
    # The first browser is signed out at its next request; the other two stay.
    assert not await first.signed_in()
    assert (await first.get("/account")).headers["Location"].startswith("/login")
    assert await second.signed_in() and await third.signed_in()
    assert len(await runtime.sessions.list_for_user(world.user_id)) == 2
    assert await ended_reasons(runtime, world.user_id) == ["session_limit"]


@pytest.mark.parametrize(
    "settings_overrides", [{"sessions": {"max_per_user": 2, "limit_policy": "refuse"}}], indirect=True
)
async def test_beyond_the_limit_a_refusing_policy_says_why(app: Any, runtime: Any, world: World) -> None:
    first = await signed_in_browser(app, world)
    second = await signed_in_browser(app, world)
    third = Browser(app)
    refused = await third.sign_in(world.email)
    assert refused.status_code == 409
    body = await text(refused)
    assert "signed in on 2 devices already" in body and "Sign out on one" in body
    assert third.cookie is None
    assert await first.signed_in() and await second.signed_in()
    # Once one signs out, there is room again.
    await first.post("/account/sessions/" + (await runtime.sessions.load(first.cookie)).sid + "/end", {
        "csrf_token": csrf_from(await text(await first.get("/account/sessions"))),
    })  # fmt: skip
    assert (await third.sign_in(world.email)).status_code == 303


@pytest.mark.parametrize("settings_overrides", [{"sessions": {"max_per_user": 1}}], indirect=True)
async def test_signing_in_again_in_the_same_browser_does_not_count_twice(app: Any, runtime: Any, world: World) -> None:
    browser = await signed_in_browser(app, world)
    before = await runtime.sessions.load(browser.cookie)
    old_cookie = browser.cookie
    assert (await browser.sign_in(world.email)).status_code == 303
    after = await runtime.sessions.load(browser.cookie)
    # A new cookie value (ASVS 7.2.4), the same session for relying parties (sid), a new authentication.
    assert browser.cookie != old_cookie
    assert await runtime.sessions.load(old_cookie) is None
    assert after.sid == before.sid and after.auth_id != before.auth_id
    assert await ended_reasons(runtime, world.user_id) == []


async def test_another_user_signing_in_ends_the_first_users_session(app: Any, runtime: Any, world: World) -> None:
    bob = await add_user(runtime, "bob@example.com")
    browser = await signed_in_browser(app, world)
    alice_sid = (await runtime.sessions.load(browser.cookie)).sid
    assert (await browser.sign_in("bob@example.com")).status_code == 303
    assert (await runtime.sessions.load(browser.cookie)).user_id == bob
    assert await runtime.sessions.by_sid(alice_sid) is None
    assert await ended_reasons(runtime, world.user_id) == ["signed_in_as_another_user"]


# -- the sessions page ---------------------------------------------------------------------------


async def test_sessions_page_lists_devices_and_ends_one(app: Any, runtime: Any, world: World) -> None:
    laptop = await signed_in_browser(app, world, user_agent=FIREFOX, ip="198.51.100.10")
    phone = await signed_in_browser(app, world, user_agent=SAFARI_IPHONE, ip="198.51.100.11")
    page = await laptop.get("/account/sessions")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    html = await text(page)
    assert "Firefox 120 on Windows 10" in html and "Safari 17 on iOS" in html
    assert "198.51.100.10" in html and "198.51.100.11" in html
    assert html.count("(this browser)") == 1
    phone_sid = (await runtime.sessions.load(phone.cookie)).sid
    laptop_sid = (await runtime.sessions.load(laptop.cookie)).sid
    assert f'data-session-id="{phone_sid}"' in html

    ended = await laptop.post(f"/account/sessions/{phone_sid}/end", {"csrf_token": csrf_from(html)})
    assert ended.status_code == 303 and ended.headers["Location"] == "/account/sessions?notice=ended"
    # The phone is signed out at its next request; the laptop is not.
    assert not await phone.signed_in()
    assert await laptop.signed_in()
    assert await ended_reasons(runtime, world.user_id) == ["ended_by_user"]

    # Ending a session that isn't there (any more) changes nothing and says so.
    again = await laptop.post(f"/account/sessions/{phone_sid}/end", {"csrf_token": csrf_from(html)})
    assert again.headers["Location"] == "/account/sessions?notice=none-ended"
    # Another user's session can't be ended from here.
    await add_user(runtime, "bob@example.com")
    bob = Browser(app)
    assert (await bob.sign_in("bob@example.com")).status_code == 303
    bob_sid = (await runtime.sessions.load(bob.cookie)).sid
    foreign = await laptop.post(f"/account/sessions/{bob_sid}/end", {"csrf_token": csrf_from(html)})
    assert foreign.headers["Location"] == "/account/sessions?notice=none-ended"
    assert await bob.signed_in()

    # Ending this browser's own session signs it out.
    own = await laptop.post(f"/account/sessions/{laptop_sid}/end", {"csrf_token": csrf_from(html)})
    assert own.status_code == 303 and own.headers["Location"].startswith("/login")
    assert not await laptop.signed_in()


async def test_sign_out_everywhere_else(app: Any, runtime: Any, world: World) -> None:
    here = await signed_in_browser(app, world)
    others = [await signed_in_browser(app, world, ip=f"198.51.100.{n}") for n in (20, 21)]
    page = await here.get("/account/sessions")
    response = await here.post("/account/sessions/end-others", {"csrf_token": csrf_from(await text(page))})
    assert response.headers["Location"] == "/account/sessions?notice=others-ended"
    assert await here.signed_in()
    for other in others:
        assert not await other.signed_in()
    assert sorted(await ended_reasons(runtime, world.user_id)) == ["ended_by_user", "ended_by_user"]


async def test_the_sessions_page_needs_a_session_and_csrf(app: Any, world: World) -> None:
    stranger = Browser(app)
    assert (await stranger.get("/account/sessions")).headers["Location"] == "/login?return_to=/account/sessions"
    browser = await signed_in_browser(app, world)
    forged = await browser.post("/account/sessions/end-others", {"csrf_token": "forged"})
    assert forged.status_code == 403


# -- the sessions API ----------------------------------------------------------------------------


async def test_sessions_api(app: Any, client: Any, runtime: Any, world: World) -> None:
    from idp.storage.models import OAuthClient

    async with runtime.db.session() as session:
        (await session.get(OAuthClient, world.spa_id)).first_party = True
    tokens = await code_flow(client, world, confidential=False)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    phone = await signed_in_browser(app, world, user_agent=CHROME_MAC, ip="198.51.100.30")
    phone_sid = (await runtime.sessions.load(phone.cookie)).sid

    listed = await client.get("/api/account/sessions", headers=bearer)
    assert listed.status_code == 200 and listed.headers["Cache-Control"] == "no-store"
    items = (await listed.get_json())["sessions"]
    assert len(items) == 2
    [current] = [item for item in items if item["current"]]
    [other] = [item for item in items if not item["current"]]
    assert current["applications"] == ["SPA"] and current["amr"] == ["pwd"]
    assert other == {
        "id": phone_sid,
        "current": False,
        "device": "Chrome 120 on macOS",
        "ip": "198.51.100.30",
        "signed_in_at": other["signed_in_at"],
        "last_seen_at": other["last_seen_at"],
        "amr": ["pwd"],
        "acr": "urn:idp:acr:1fa",
        "applications": [],
    }
    assert other["signed_in_at"].endswith("Z")

    # No cookies: the API answers Bearer tokens only.
    assert (await phone.get("/api/account/sessions")).status_code == 401

    assert (await client.delete(f"/api/account/sessions/{phone_sid}", headers=bearer)).status_code == 204
    assert not await phone.signed_in()
    missing = await client.delete(f"/api/account/sessions/{phone_sid}", headers=bearer)
    assert missing.status_code == 404 and (await missing.get_json())["error"] == "not_found"

    laptop = await signed_in_browser(app, world, ip="198.51.100.31")
    ended = await client.post("/api/account/sessions/end-others", headers=bearer)
    assert ended.status_code == 200 and await ended.get_json() == {"ended": 1}
    assert not await laptop.signed_in()
    assert len(await runtime.sessions.list_for_user(world.user_id)) == 1

    # Once the token's own session has ended there is nothing to keep: a clear 409.
    await client.delete(f"/api/account/sessions/{current['id']}", headers=bearer)
    conflict = await client.post("/api/account/sessions/end-others", headers=bearer)
    assert conflict.status_code == 409 and "has ended" in (await conflict.get_json())["error_description"]


# -- devices -------------------------------------------------------------------------------------


async def test_a_new_browser_is_announced_by_mail(app: Any, runtime: Any, world: World) -> None:
    laptop = await signed_in_browser(app, world, user_agent=FIREFOX)
    assert (await outbox_subjects(runtime)) == []  # the account's first browser: nothing to compare with
    page = await laptop.get("/account/sessions")
    await laptop.post("/account/sessions/" + (await runtime.sessions.load(laptop.cookie)).sid + "/end", {
        "csrf_token": csrf_from(await text(page)),
    })  # fmt: skip
    assert (await laptop.sign_in(world.email)).status_code == 303  # the same browser again: known
    assert (await outbox_subjects(runtime)) == []

    await signed_in_browser(app, world, user_agent=SAFARI_IPHONE, ip="198.51.100.99")
    assert (await outbox_subjects(runtime)) == [NEW_SIGN_IN]
    [event] = await audit(runtime, world.user_id, "new_device_sign_in")
    assert event.details["device"] == "Safari 17 on iOS" and event.ip == "198.51.100.99"
    async with runtime.db.session() as session:
        devices = list((await session.execute(select(KnownDevice))).scalars())
    assert sorted(device.label for device in devices) == ["Firefox 120 on Windows 10", "Safari 17 on iOS"]
    # The device cookie is long-lived and only its digest is stored.
    cookies = {cookie.name: cookie.value for cookie in laptop.client.cookie_jar}
    assert cookies["idp_device"] not in {device.device_digest for device in devices}


@pytest.mark.parametrize("settings_overrides", [{"sessions": {"notify_new_device": False}}], indirect=True)
async def test_the_new_browser_notice_can_be_switched_off(app: Any, runtime: Any, world: World) -> None:
    await signed_in_browser(app, world)
    await signed_in_browser(app, world)
    assert (await outbox_subjects(runtime)) == []
    assert len(await audit(runtime, world.user_id, "new_device_sign_in")) == 1


# -- rotation at privilege changes ---------------------------------------------------------------


async def test_password_change_rotates_this_sessions_cookie(app: Any, runtime: Any, world: World) -> None:
    browser = await signed_in_browser(app, world)
    other = await signed_in_browser(app, world)
    before_cookie = browser.cookie
    sid = (await runtime.sessions.load(before_cookie)).sid
    page = await browser.get("/account/password")
    changed = await browser.post(
        "/account/password",
        {
            "csrf_token": csrf_from(await text(page)),
            "current_password": PASSWORD,
            "new_password": "a-brand-new-long-passphrase-42",
        },
    )
    assert changed.status_code == 200
    assert browser.cookie != before_cookie
    assert await runtime.sessions.load(before_cookie) is None
    assert (await runtime.sessions.load(browser.cookie)).sid == sid
    assert await browser.signed_in() and not await other.signed_in()
    assert await ended_reasons(runtime, world.user_id) == ["password_changed"]


# -- what ending a session does to relying parties -----------------------------------------------


async def test_ending_a_session_logs_its_clients_out(client: Any, runtime: Any, world: World) -> None:
    recorder = Recorder()
    await install_notifier(runtime, recorder)
    client_id, secret = await bcl_client(runtime)
    online = await sign_in_through(client, world, client_id, secret, scope="openid profile")
    offline = await sign_in_through(client, world, client_id, secret, scope="openid offline_access")
    id_claims = runtime.tokens.verify(online["id_token"], typ=ID_TOKEN_TYP, audience=client_id)
    session = await runtime.sessions.load(session_cookie(client))
    assert session.clients == [client_id] and session.sid == id_claims["sid"]

    # Ended from elsewhere (the user's other device, an administrator): the RP hears of it …
    assert await account_status.end_sessions(runtime.accounts, world.user_id, session.sid) == 1
    await runtime.backchannel.drain()
    [delivery] = recorder.requests
    _, claims = await verify_logout_token(client, parse_qs(delivery.content.decode())["logout_token"][0])
    assert claims["sid"] == id_claims["sid"] and claims["sub"] == id_claims["sub"]
    # … the refresh token issued for the signed-in user dies with the session, the offline one lives on.
    assert (await _refresh(client, online, client_id, secret)).status_code == 400
    assert (await _refresh(client, offline, client_id, secret)).status_code == 200
    assert await ended_reasons(runtime, world.user_id) == ["ended_by_admin"]


async def _refresh(client: Any, tokens: dict[str, Any], client_id: str, secret: str) -> Any:
    return await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(client_id, secret),
    )


async def test_online_refresh_tokens_die_with_their_session(client: Any, runtime: Any, world: World) -> None:
    tokens = await code_flow(client, world, scope="openid profile")
    cookie = session_cookie(client)
    session = await runtime.sessions.load(cookie)
    await runtime.sessions.end(session, reason="ended_by_user")
    refreshed = await _refresh(client, tokens, world.web_id, world.web_secret)
    assert refreshed.status_code == 400 and (await refreshed.get_json())["error"] == "invalid_grant"
    introspected = await client.post(
        "/introspect", form={"token": tokens["access_token"]}, headers=basic(world.web_id, world.web_secret)
    )
    assert await introspected.get_json() == {"active": False}


@pytest.mark.parametrize(
    ("settings_overrides", "scope", "status"),
    [
        ({}, "openid offline_access", 200),  # "online", the default: offline access outlives the sign-in
        ({"sessions": {"end_revokes_refresh_tokens": "all"}}, "openid offline_access", 400),
        ({"sessions": {"end_revokes_refresh_tokens": "none"}}, "openid profile", 200),
    ],
    indirect=["settings_overrides"],
)
async def test_which_refresh_tokens_die_with_their_session(
    client: Any, runtime: Any, world: World, scope: str, status: int
) -> None:
    tokens = await code_flow(client, world, scope=scope)
    await runtime.sessions.end(await runtime.sessions.load(session_cookie(client)), reason="logout")
    assert (await _refresh(client, tokens, world.web_id, world.web_secret)).status_code == status


# Security test M4 (ASVS 7.4.1, 7.4.3, 7.5.2): a session that ends revokes the access tokens issued
# in it by the rule of its refresh tokens, whatever grants the client has. A client without the
# refresh grant keeps nothing "offline", so in the default mode its tokens die with the session.


async def code_only_client(runtime: Any) -> tuple[str, str]:
    created = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="No refresh",
            client_type="confidential",
            redirect_uris=[WEB_REDIRECT],
            grant_types=["authorization_code"],
            first_party=True,
        ),
    )
    assert created.client_secret is not None
    return created.client.id, created.client_secret


async def user_name(runtime: Any, user_id: str) -> str | None:
    async with runtime.db.session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user.name


async def token_works(client: Any, access_token: str) -> bool:
    response = await client.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return bool(response.status_code == 200)


async def assert_token_dead(client: Any, runtime: Any, world: World, access_token: str) -> None:
    bearer = {"Authorization": f"Bearer {access_token}"}
    before = await user_name(runtime, world.user_id)
    userinfo = await client.get("/userinfo", headers=bearer)
    assert userinfo.status_code == 401 and (await userinfo.get_json())["error"] == "invalid_token"
    assert userinfo.headers["WWW-Authenticate"].startswith("Bearer ")
    changed = await client.patch(
        "/api/account/profile", json={"name": "changed after the session ended"}, headers=bearer
    )
    assert changed.status_code == 401 and (await changed.get_json())["error"] == "invalid_token"
    assert await user_name(runtime, world.user_id) == before == "Alice Example"


async def _log_out(client: Any, app: Any, runtime: Any, world: World) -> None:
    page = await client.get("/logout")
    done = await client.post("/logout", form={"csrf_token": csrf_from(await text(page)), "confirm": "yes"})
    assert done.status_code == 200 and session_cookie(client) is None


async def _end_others_on_the_page(client: Any, app: Any, runtime: Any, world: World) -> None:
    phone = await signed_in_browser(app, world, user_agent=SAFARI_IPHONE, ip="198.51.100.61")
    page = await phone.get("/account/sessions")
    done = await phone.post("/account/sessions/end-others", {"csrf_token": csrf_from(await text(page))})
    assert done.headers["Location"] == "/account/sessions?notice=others-ended"


async def _end_others_through_the_api(client: Any, app: Any, runtime: Any, world: World) -> None:
    from idp.storage.models import OAuthClient

    async with runtime.db.session() as session:
        (await session.get(OAuthClient, world.spa_id)).first_party = True
    phone = Browser(app, user_agent=SAFARI_IPHONE, ip="198.51.100.62")
    spa_tokens = await code_flow(phone.client, world, confidential=False)
    bearer = {"Authorization": f"Bearer {spa_tokens['access_token']}"}
    done = await phone.client.post("/api/account/sessions/end-others", headers=bearer)
    assert done.status_code == 200 and await done.get_json() == {"ended": 1}


async def _change_the_password_elsewhere(client: Any, app: Any, runtime: Any, world: World) -> None:
    phone = await signed_in_browser(app, world, ip="198.51.100.63")
    page = await phone.get("/account/password")
    form = {
        "csrf_token": csrf_from(await text(page)),
        "current_password": PASSWORD,
        "new_password": "a-brand-new-long-passphrase-42",
    }
    assert (await phone.post("/account/password", form)).status_code == 200


async def _administrator_ends_them(client: Any, app: Any, runtime: Any, world: World) -> None:
    # What `idp users end-sessions` runs (the CLI opens its own runtime, so call it here).
    assert await account_status.end_sessions(runtime.accounts, world.user_id) == 1


@pytest.mark.parametrize(
    "end_session",
    [
        _log_out,
        _end_others_on_the_page,
        _end_others_through_the_api,
        _change_the_password_elsewhere,
        _administrator_ends_them,
    ],
    ids=["logout", "end-others-page", "end-others-api", "password-change", "administrator"],
)
async def test_access_tokens_of_a_client_without_refresh_tokens_die_with_their_session(
    app: Any, client: Any, runtime: Any, world: World, end_session: Any
) -> None:
    client_id, secret = await code_only_client(runtime)
    tokens = await sign_in_through(client, world, client_id, secret, scope="openid profile")
    assert "refresh_token" not in tokens and await token_works(client, tokens["access_token"])

    await end_session(client, app, runtime, world)

    await assert_token_dead(client, runtime, world, tokens["access_token"])
    introspected = await client.post(
        "/introspect", form={"token": tokens["access_token"]}, headers=basic(client_id, secret)
    )
    assert await introspected.get_json() == {"active": False}


@pytest.mark.parametrize(
    ("settings_overrides", "code_only_dies", "offline_dies", "online_dies"),
    [
        ({}, True, False, True),  # "online": offline_access outlives the sign-in, if there is a refresh token
        ({"sessions": {"end_revokes_refresh_tokens": "all"}}, True, True, True),
        ({"sessions": {"end_revokes_refresh_tokens": "none"}}, False, False, False),
    ],
    ids=["online", "all", "none"],
    indirect=["settings_overrides"],
)
async def test_which_access_tokens_die_with_their_session(
    client: Any, runtime: Any, world: World, code_only_dies: bool, offline_dies: bool, online_dies: bool
) -> None:
    client_id, secret = await code_only_client(runtime)
    # Asked for offline_access, but without a refresh token there is nothing offline to keep.
    code_only = await sign_in_through(client, world, client_id, secret, scope="openid offline_access")
    offline = await code_flow(client, world, scope="openid offline_access")
    online = await code_flow(client, world, scope="openid profile")

    await runtime.sessions.end(await runtime.sessions.load(session_cookie(client)), reason="logout")

    assert await token_works(client, code_only["access_token"]) is not code_only_dies
    assert await token_works(client, offline["access_token"]) is not offline_dies
    assert await token_works(client, online["access_token"]) is not online_dies
    assert (await _refresh(client, offline, world.web_id, world.web_secret)).status_code == (
        400 if offline_dies else 200
    )


@pytest.mark.parametrize(
    ("settings_overrides", "scope", "refused"),
    [
        ({}, "openid profile", True),
        ({}, "openid offline_access", False),  # "online": offline access outlives the sign-in
        ({"sessions": {"end_revokes_refresh_tokens": "all"}}, "openid offline_access", True),
        ({"sessions": {"end_revokes_refresh_tokens": "none"}}, "openid profile", False),
    ],
    ids=["online", "online-offline", "all", "none"],
    indirect=["settings_overrides"],
)
async def test_a_code_from_a_session_that_ended_yields_what_its_end_would_have_left(
    client: Any, runtime: Any, world: World, scope: str, refused: bool
) -> None:
    """A code issued just before logout and redeemed after it: its tokens would outlive the logout
    by the code's lifetime, so the same rule as for the session's other tokens applies (ASVS 7.4.1)."""
    from tests.oauth_helpers import authorize, query_of

    response, verifier = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email, scope=scope)
    code = query_of(response.headers["Location"])["code"]
    await runtime.sessions.end(await runtime.sessions.load(session_cookie(client)), reason="logout")
    token = await client.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": WEB_REDIRECT,
            "code_verifier": verifier,
        },
        headers=basic(world.web_id, world.web_secret),
    )
    if refused:
        assert token.status_code == 400
        body = await token.get_json()
        assert body == {
            "error": "invalid_grant",
            "error_description": "The sign-in session this code was issued in has ended.",
        }
    else:
        assert token.status_code == 200


async def test_a_session_end_revokes_each_grant_once(client: Any, runtime: Any, world: World) -> None:
    client_id, secret = await code_only_client(runtime)
    first = await sign_in_through(client, world, client_id, secret, scope="openid profile")
    second = await sign_in_through(client, world, client_id, secret, scope="openid email")
    online = await code_flow(client, world, scope="openid profile")
    # A grant its client revoked already (RFC 7009) is not revoked, or audited, a second time.
    revoked = await code_flow(client, world, scope="openid profile")
    refused = await client.post(
        "/revoke", form={"token": revoked["refresh_token"]}, headers=basic(world.web_id, world.web_secret)
    )
    assert refused.status_code == 200

    await runtime.sessions.end(await runtime.sessions.load(session_cookie(client)), reason="logout")

    for tokens in (first, second, online, revoked):
        assert not await token_works(client, tokens["access_token"])
    events = await audit(runtime, world.user_id, "token_revoked")
    by_session = sorted(str(event.client_id) for event in events if event.details["reason"] == "session_logout")
    assert by_session == sorted([client_id, client_id, world.web_id])
    assert [event.details["reason"] for event in events].count("client_request") == 1


# -- administration ------------------------------------------------------------------------------


async def test_disabling_an_account_ends_its_sessions_and_tokens(
    app: Any, client: Any, runtime: Any, world: World
) -> None:
    tokens = await code_flow(client, world, scope="openid offline_access")
    phone = await signed_in_browser(app, world)
    assert await account_status.disable(runtime.accounts, world.user_id) == 2
    assert not await phone.signed_in()
    assert (await client.get("/account")).status_code == 303
    refreshed = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert refreshed.status_code == 400
    assert (await phone.sign_in(world.email)).status_code == 401
    assert sorted(await ended_reasons(runtime, world.user_id)) == ["account_disabled", "account_disabled"]
    [disabled] = await audit(runtime, world.user_id, "account_disabled")
    assert disabled.details["sessions_ended"] == 2

    await account_status.enable(runtime.accounts, world.user_id)
    assert (await phone.sign_in(world.email)).status_code == 303
    assert len(await audit(runtime, world.user_id, "account_enabled")) == 1


async def test_session_end_events_name_no_cookie(runtime: Any, app: Any, world: World) -> None:
    browser = await signed_in_browser(app, world)
    await account_status.end_sessions(runtime.accounts, world.user_id)
    async with runtime.db.session() as session:
        rows = list((await session.execute(select(AuditEvent).where(AuditEvent.event == "session_ended"))).scalars())
    assert len(rows) == 1
    assert browser.cookie not in str(rows[0].details)
    assert set(rows[0].details) == {"sid", "reason", "clients", "via"}


async def test_a_session_of_an_account_disabled_elsewhere_ends_at_its_next_request(
    app: Any, runtime: Any, world: World
) -> None:
    """Disabled by a process that can't reach this server's sessions (the CLI without Redis)."""
    from sqlalchemy import update

    from idp.storage.models import User

    browser = await signed_in_browser(app, world)
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(disabled=True))
    assert not await browser.signed_in()
    assert await runtime.sessions.list_for_user(world.user_id) == []
    assert await ended_reasons(runtime, world.user_id) == ["account_disabled"]


async def test_concurrent_sign_ins_respect_the_limit(runtime: Any, world: World) -> None:
    """Sign-ins racing on several nodes: the per-user lock in the shared store keeps the count."""
    import asyncio

    from idp.accounts.sessions.store import SessionStore, TooManySessions

    nodes = [
        SessionStore(runtime.kv, runtime.events, idle_ttl=3600, absolute_ttl=86400, max_per_user=2, limit_policy=policy)
        for policy in ("refuse", "refuse", "refuse", "refuse")
    ]
    results = await asyncio.gather(*(node.create(world.user_id, amr=["pwd"]) for node in nodes), return_exceptions=True)
    assert sum(isinstance(result, TooManySessions) for result in results) == 2
    assert len(await runtime.sessions.list_for_user(world.user_id)) == 2

    ending = [SessionStore(runtime.kv, runtime.events, idle_ttl=3600, absolute_ttl=86400, max_per_user=2)] * 3
    await asyncio.gather(*(node.create(world.user_id, amr=["pwd"]) for node in ending))
    assert len(await runtime.sessions.list_for_user(world.user_id)) == 2


async def test_removing_a_second_factor_rotates_this_sessions_cookie(app: Any, runtime: Any, clock: Any) -> None:
    import pyotp

    from tests.mfa_helpers import enable_totp, post_code

    world = await make_world(runtime)
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    browser = Browser(app)
    await browser.sign_in(world.email)
    assert (await post_code(browser.client, "totp", pyotp.TOTP(secret).at(clock.now))).status_code == 303
    clock.advance()
    before = browser.cookie
    sid = (await runtime.sessions.load(before)).sid
    page = await browser.get("/account/security")
    off = await browser.post(
        "/account/security/totp/disable",
        {"csrf_token": csrf_from(await text(page)), "password": PASSWORD, "code": pyotp.TOTP(secret).at(clock.now)},
    )
    assert off.status_code == 303
    assert browser.cookie != before and await runtime.sessions.load(before) is None
    assert (await runtime.sessions.load(browser.cookie)).sid == sid and await browser.signed_in()


# -- timeouts --------------------------------------------------------------------------------------


class SessionClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_idle_timeout_and_absolute_lifetime(runtime: Any, world: World) -> None:
    from idp.accounts.sessions.store import SessionStore

    clock = SessionClock()
    store = SessionStore(runtime.kv, runtime.events, idle_ttl=600, absolute_ttl=1800, clock=clock)
    cookie, _ = await store.create(world.user_id, amr=["pwd"])
    # Idle: 599 s without a request is fine, and the request counts as activity …
    clock.now += 599
    assert await store.load(cookie) is not None
    clock.now += 599
    assert await store.load(cookie) is not None
    # … 600 s without one ends it.
    clock.now += 600
    assert await store.load(cookie) is None
    assert await store.list_for_user(world.user_id) == []

    # Absolute: however active, the session ends absolute_ttl after sign-in.
    cookie, _ = await store.create(world.user_id, amr=["pwd"])
    for _ in range(5):
        clock.now += 300
        assert await store.load(cookie) is not None
    clock.now += 299
    assert await store.load(cookie) is not None  # 1799 s
    clock.now += 1
    assert await store.load(cookie) is None
    # Expiry is not an early end: no SessionEnded, nothing for relying parties.
    assert await ended_reasons(runtime, world.user_id) == []


# -- ending another session needs a fresh authentication (ASVS 7.5.2) --------------------------------


async def _age(runtime: Any, browser: Browser, seconds: int) -> None:
    session = await runtime.sessions.load(browser.cookie)
    session.auth_time -= seconds
    await runtime.sessions._save(session, int(session.last_seen))


async def test_ending_another_session_later_asks_for_the_password(app: Any, runtime: Any, world: World) -> None:
    laptop = await signed_in_browser(app, world, ip="198.51.100.40")
    phone = await signed_in_browser(app, world, user_agent=SAFARI_IPHONE, ip="198.51.100.41")
    phone_sid = (await runtime.sessions.load(phone.cookie)).sid
    await _age(runtime, laptop, 301)

    listed = await text(await laptop.get("/account/sessions"))
    assert f'href="/account/sessions/{phone_sid}/end"' in listed
    confirm = await laptop.get(f"/account/sessions/{phone_sid}/end")
    html = await text(confirm)
    assert confirm.status_code == 200 and "Safari 17 on iOS" in html and 'name="password"' in html
    token = csrf_from(html)

    for password, message in (("", "Enter your password to confirm"), ("not-my-password", "not correct")):
        refused = await laptop.post(f"/account/sessions/{phone_sid}/end", {"csrf_token": token, "password": password})
        assert refused.status_code == 400 and message in await text(refused)
        assert await phone.signed_in()
    ended = await laptop.post(f"/account/sessions/{phone_sid}/end", {"csrf_token": token, "password": PASSWORD})
    assert ended.headers["Location"] == "/account/sessions?notice=ended"
    assert not await phone.signed_in()

    # Signing in again (same browser, same session) counts as authenticating again.
    other = await signed_in_browser(app, world, ip="198.51.100.42")
    assert (await laptop.sign_in(world.email)).status_code == 303
    page = await laptop.get("/account/sessions/end-others")
    assert 'name="password"' not in await text(page)
    done = await laptop.post("/account/sessions/end-others", {"csrf_token": csrf_from(await text(page))})
    assert done.headers["Location"] == "/account/sessions?notice=others-ended"
    assert not await other.signed_in() and await laptop.signed_in()


async def test_signing_out_this_browser_needs_no_password(app: Any, runtime: Any, world: World) -> None:
    browser = await signed_in_browser(app, world)
    await _age(runtime, browser, 3000)
    sid = (await runtime.sessions.load(browser.cookie)).sid
    page = await text(await browser.get("/account/sessions"))
    out = await browser.post(f"/account/sessions/{sid}/end", {"csrf_token": csrf_from(page)})
    assert out.status_code == 303 and not await browser.signed_in()


async def test_the_api_asks_for_a_fresh_sign_in_or_the_password(
    app: Any, client: Any, runtime: Any, world: World
) -> None:
    from idp.storage.models import OAuthClient
    from tests.oauth_helpers import age_session, login

    async with runtime.db.session() as session:
        (await session.get(OAuthClient, world.spa_id)).first_party = True
    await login(client, world.email)
    await age_session(runtime, client, 600)
    tokens = await code_flow(client, world, confidential=False)  # the token's auth_time is 600 s old
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    phone = await signed_in_browser(app, world)
    phone_sid = (await runtime.sessions.load(phone.cookie)).sid

    stale = await client.delete(f"/api/account/sessions/{phone_sid}", headers=bearer)
    assert stale.status_code == 401
    assert (await stale.get_json())["error"] == "insufficient_user_authentication"
    assert 'max_age="300"' in stale.headers["WWW-Authenticate"]
    wrong = await client.delete(f"/api/account/sessions/{phone_sid}", headers=bearer, json={"password": "nope"})
    assert wrong.status_code == 400 and (await wrong.get_json())["field"] == "password"
    unknown = await client.post("/api/account/sessions/end-others", headers=bearer, json={"passwd": PASSWORD})
    assert unknown.status_code == 400
    assert await phone.signed_in()

    done = await client.delete(f"/api/account/sessions/{phone_sid}", headers=bearer, json={"password": PASSWORD})
    assert done.status_code == 204 and not await phone.signed_in()
    assert (await client.post("/api/account/sessions/end-others", headers=bearer)).status_code == 401


async def test_a_session_ended_meanwhile_is_not_brought_back(runtime: Any, world: World) -> None:
    """Another device ends the session while this browser's request rotates or renews it."""
    cookie, session = await runtime.sessions.create(world.user_id, amr=["pwd"])
    loaded = await runtime.sessions.load(cookie)
    await runtime.sessions.end(session, reason="ended_by_user")
    assert await runtime.sessions.rotate(loaded) is None
    assert await runtime.sessions.list_for_user(world.user_id) == []
    # Signing in again then is a new session: a new sid, not the ended one revived.
    new_cookie, renewed = await runtime.sessions.reauthenticate(loaded, amr=["pwd"], acr=None)
    assert renewed.sid != session.sid and await runtime.sessions.load(new_cookie) is not None
    assert await runtime.sessions.by_sid(session.sid) is None


async def test_a_touch_or_a_new_client_does_not_revive_an_ended_session(runtime: Any, world: World) -> None:
    """The browser's request reads its session just before another device ends it."""
    from idp.accounts.sessions.store import SessionStore

    clock = SessionClock()
    store = SessionStore(runtime.kv, runtime.events, idle_ttl=3600, absolute_ttl=86400, clock=clock)
    cookie, session = await store.create(world.user_id, amr=["pwd"])
    in_flight = await store.load(cookie)
    await store.end(session, reason="ended_by_user")
    await store.add_client(in_flight, "some-client")
    clock.now += 120  # past the touch interval: loading would refresh last_seen
    assert await store.load(cookie) is None
    assert await store.by_sid(session.sid) is None and await store.list_for_user(world.user_id) == []
