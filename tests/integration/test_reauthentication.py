"""Password re-checks by a signed-in user count as sign-in attempts (security review M3).

Changing the password, a second factor or the sessions, or deleting the account, asks for the
password again (ASVS 7.5.1, 7.5.2). Each of those checks is an attempt at the same authenticator as a
sign-in, so it meets the same rate limits (``login_per_ip``, ``login_per_account``) and the same
lockout guard, keyed by the account's address and the client IP: NIST SP 800-63B §3.2.2 (limit
consecutive failures per authenticator), ASVS 6.3.1 (brute-force controls as documented), ASVS 6.1.1
(the owner's own browser is not locked out). A stolen session cookie or access token is then no
unlimited password oracle. Pages answer 429 with Retry-After; the account API 429 ``rate_limited``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from idp.security.lockout import LoginGuard
from idp.storage.models import MfaCredential, RecoveryCode, User
from tests.integration.test_account_api import api_world, bearer, token_for
from tests.mfa_helpers import SESSION_COOKIE, audit, outbox_subjects, text
from tests.oauth_helpers import PASSWORD, World, age_session, cookie_value, csrf_from, login

LOCKOUT = {
    "window": 900,
    "delay_after": 2,
    "max_delay": 4,
    "lock_after": 4,
    "lock_duration": 600,
    "account_lock_after": 6,
    "ip_failures": 8,
}
NEW_PASSWORD = "another-long-passphrase-xyz"
LOCK_NOTICE = "Sign-in to your account was blocked after failed attempts"
HOME = "198.51.100.20"  # where the signed-in browser (and its access token) is


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


class GuardClock:
    """The lockout guard's clock, moved by the test past each progressive delay."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def guard_clock(runtime: Any) -> GuardClock:
    clock = GuardClock()
    guard: LoginGuard = runtime.lockout
    guard.clock = clock
    return clock


def at(ip: str) -> dict[str, Any]:
    return {"client": (ip, 40000)}


async def sign_in(client: Any, email: str, password: str, ip: str) -> Any:
    page = await client.get("/login", scope_base=at(ip))
    form = {"email": email, "password": password, "csrf_token": csrf_from(await text(page)), "return_to": "/account"}
    return await client.post("/login", form=form, scope_base=at(ip))


async def password_hash(runtime: Any, user_id: str) -> str | None:
    async with runtime.db.session() as session:
        user = await session.get(User, user_id)
        return user.password_hash if user is not None else None


async def rows(runtime: Any, model: Any, user_id: str) -> list[Any]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(model).where(model.user_id == user_id))).scalars())


async def failure_reasons(runtime: Any, user_id: str) -> list[str]:
    return [event.details["reason"] for event in await audit(runtime, user_id, "login_failed")]


# -- the reproductions of the review -----------------------------------------------------------------


async def test_guessing_the_current_password_on_the_password_page_locks_like_sign_in(
    app: Any, runtime: Any, guard_clock: GuardClock
) -> None:
    """M3, the page: 40 guesses of current_password from a signed-in browser, then the right one.
    With the default [lockout] (delay after 3 failures, lock after 10 from one IP for 15 minutes) the
    10th failure locks; the right password is then refused (429), changes nothing, and the owner has
    been mailed. Signing in from that address is blocked as well."""
    world = await api_world(runtime)
    browser = app.test_client()
    assert (await sign_in(browser, world.email, PASSWORD, HOME)).status_code == 303
    before = await password_hash(runtime, world.user_id)
    spec = runtime.settings.lockout
    token = csrf_from(await text(await browser.get("/account/password", scope_base=at(HOME))))

    async def change(current: str) -> Any:
        form = {"csrf_token": token, "current_password": current, "new_password": NEW_PASSWORD}
        return await browser.post("/account/password", form=form, scope_base=at(HOME))

    statuses = []
    for n in range(40):
        response = await change(f"guess-{n:04d}-wrong")
        statuses.append(response.status_code)
        if response.status_code == 400:
            assert "The current password is incorrect." in await text(response)
            guard_clock.advance(spec.max_delay)  # past any progressive delay: every guess is checked
    assert statuses == [400] * spec.lock_after + [429] * (40 - spec.lock_after)

    refused = await change(PASSWORD)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(spec.lock_duration - spec.max_delay)
    page = await text(refused)
    assert 'id="error-code">rate_limited<' in page
    assert "Too many wrong passwords: your password can&#39;t be checked for 14 minutes." in page
    assert "must differ" not in page
    assert await password_hash(runtime, world.user_id) == before

    [locked] = await audit(runtime, world.user_id, "account_locked")
    assert (locked.details["scope"], locked.details["duration"]) == ("account_ip", spec.lock_duration)
    assert (await outbox_subjects(runtime)) == [LOCK_NOTICE]
    reasons = await failure_reasons(runtime, world.user_id)
    assert (reasons.count("invalid_credentials"), reasons.count("locked")) == (spec.lock_after, 41 - spec.lock_after)

    # The lock is the sign-in's lock: this address can't sign in to the account either.
    stranger = await sign_in(app.test_client(), world.email, PASSWORD, HOME)
    assert stranger.status_code == 429 and "signing in is blocked" in await text(stranger)


async def test_guessing_the_password_through_the_account_api_is_limited(
    app: Any, client: Any, runtime: Any, guard_clock: GuardClock
) -> None:
    """M3, the API: 30 wrong ``password`` members on POST /api/account/mfa/recovery-codes, then the
    right one on POST /api/account/passkeys/options. A Bearer call has no device cookie, so it counts
    as an unknown browser: the lock (10 failures) and then the per-account limit (30 attempts in 5
    minutes, the sign-in included) refuse it with 429 rate_limited."""
    world = await api_world(runtime)
    access_token = await token_for(client, world)  # its sign-in is attempt 1 on the account
    spec = runtime.settings.lockout

    bodies = []
    for n in range(30):
        response = await client.post(
            "/api/account/mfa/recovery-codes", json={"password": f"guess-{n:04d}-wrong"}, headers=bearer(access_token)
        )
        body = await response.get_json()
        bodies.append((response.status_code, body["error"]))
        if response.status_code == 400:
            assert body["field"] == "password" and body["error_description"] == "password: The password is not correct."
            guard_clock.advance(spec.max_delay)
    assert bodies == [(400, "invalid_request")] * spec.lock_after + [(429, "rate_limited")] * (30 - spec.lock_after)

    refused = await client.post(
        "/api/account/passkeys/options", json={"password": PASSWORD}, headers=bearer(access_token)
    )
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "300"  # the per-account limit: attempt 32 of 30
    assert await refused.get_json() == {
        "error": "rate_limited",
        "error_description": "Too many password attempts. Wait 5 minutes before trying again.",
    }
    assert refused.headers["Cache-Control"] == "no-store"
    assert await rows(runtime, MfaCredential, world.user_id) == []
    assert await rows(runtime, RecoveryCode, world.user_id) == []
    [locked] = await audit(runtime, world.user_id, "account_locked")
    assert locked.details["scope"] == "account_ip"
    assert LOCK_NOTICE in (await outbox_subjects(runtime))
    reasons = await failure_reasons(runtime, world.user_id)
    assert reasons.count("invalid_credentials") == spec.lock_after
    assert reasons.count("rate_limited") == 2 and reasons.count("locked") == 30 - spec.lock_after - 1


# -- every re-check counts ---------------------------------------------------------------------------


@dataclass
class Scene:
    world: World
    browser: Any  # signed in (a known device of the account), its session past the 5-minute window
    other_sid: str  # another session of the account, in another browser
    other: Any
    csrf: str
    access_token: str  # a first-party token, issued in the browser's session


Send = Callable[[Scene, str], Awaitable[Any]]


def page_form(path: str, field: str = "password", **form: str) -> Send:
    async def send(scene: Scene, password: str) -> Any:
        target = path.format(sid=scene.other_sid)
        data = {"csrf_token": scene.csrf, **form, field: password}
        return await scene.browser.post(target, form=data, scope_base=at(HOME))

    return send


def page_json(path: str) -> Send:
    async def send(scene: Scene, password: str) -> Any:
        headers = {"X-CSRF-Token": scene.csrf}
        return await scene.browser.post(path, json={"password": password}, headers=headers, scope_base=at(HOME))

    return send


def api(method: str, path: str, **members: str) -> Send:
    async def send(scene: Scene, password: str) -> Any:
        target = path.format(sid=scene.other_sid)
        return await scene.browser.open(
            target,
            method=method,
            json={"password": password, **members},
            headers=bearer(scene.access_token),
            scope_base=at(HOME),
        )

    return send


RECHECKS: dict[str, Send] = {
    "page: change password": page_form("/account/password", "current_password", new_password=NEW_PASSWORD),
    "page: delete the account": page_form("/account/delete", confirm="delete"),
    "page: end another session": page_form("/account/sessions/{sid}/end"),
    "page: end the other sessions": page_form("/account/sessions/end-others"),
    "page: set up TOTP": page_form("/account/security/totp"),
    "page: turn TOTP off": page_form("/account/security/totp/disable", code="000000"),
    "page: new recovery codes": page_form("/account/security/recovery-codes"),
    "page: add a passkey": page_json("/account/security/passkeys/options"),
    "page: remove a passkey": page_form("/account/security/passkeys/no-such-key/remove"),
    "api: DELETE /api/account": api("DELETE", "/api/account"),
    "api: POST /mfa/totp": api("POST", "/api/account/mfa/totp"),
    "api: DELETE /mfa/totp": api("DELETE", "/api/account/mfa/totp", code="000000"),
    "api: POST /mfa/recovery-codes": api("POST", "/api/account/mfa/recovery-codes"),
    "api: POST /passkeys/options": api("POST", "/api/account/passkeys/options"),
    "api: DELETE /passkeys/<id>": api("DELETE", "/api/account/passkeys/no-such-key"),
    "api: DELETE /sessions/<sid>": api("DELETE", "/api/account/sessions/{sid}"),
    "api: POST /sessions/end-others": api("POST", "/api/account/sessions/end-others"),
}


async def make_scene(app: Any, runtime: Any) -> Scene:
    world = await api_world(runtime)
    browser = app.test_client()
    assert (await sign_in(browser, world.email, PASSWORD, HOME)).status_code == 303
    access_token = await token_for(browser, world)
    other = app.test_client()
    assert (await sign_in(other, world.email, PASSWORD, "203.0.113.50")).status_code == 303
    other_session = await runtime.sessions.load(cookie_value(other, SESSION_COOKIE))
    await age_session(runtime, browser, 600)  # ending other sessions asks for the password again
    csrf = csrf_from(await text(await browser.get("/account/security", scope_base=at(HOME))))
    return Scene(world, browser, other_session.sid, other, csrf, access_token)


async def assert_wrong_password(response: Any) -> None:
    assert response.status_code == 400, await text(response)
    if response.mimetype == "application/json":
        body = await response.get_json()
        assert body["error"] == "invalid_request"
        if "field" in body:  # the account API names the member
            assert body["field"] == "password"
        assert body["error_description"].endswith("The password is not correct.")
    else:
        assert re.search(r"(current )?password is (not correct|incorrect)", await text(response), re.IGNORECASE)


@pytest.mark.parametrize("settings_overrides", [{"lockout": LOCKOUT}], indirect=True)
@pytest.mark.parametrize("route", list(RECHECKS), ids=list(RECHECKS))
async def test_every_password_recheck_counts_as_a_sign_in_attempt(
    app: Any, runtime: Any, guard_clock: GuardClock, route: str
) -> None:
    """After ``lock_after`` wrong passwords from one IP on any re-check route, the route refuses the
    right password (429 with Retry-After, nothing changed), the owner is mailed, and signing in to the
    account from that IP is refused too; from elsewhere it still works (the lock is per IP)."""
    send = RECHECKS[route]
    scene = await make_scene(app, runtime)
    before = await password_hash(runtime, scene.world.user_id)

    for n in range(LOCKOUT["lock_after"]):
        await assert_wrong_password(await send(scene, f"guess-{n:04d}-wrong"))
        guard_clock.advance(LOCKOUT["max_delay"])

    refused = await send(scene, PASSWORD)
    assert refused.status_code == 429, await text(refused)
    assert 0 < int(refused.headers["Retry-After"]) <= LOCKOUT["lock_duration"]
    if route.startswith("api") or refused.mimetype == "application/json":
        body = await refused.get_json()
        assert body["error"] == "rate_limited"
        assert body["error_description"].startswith("Too many wrong passwords")
    else:
        assert "Too many wrong passwords" in await text(refused)

    # Nothing changed: the password, the account, its factors, the other session.
    assert await password_hash(runtime, scene.world.user_id) == before
    assert await rows(runtime, MfaCredential, scene.world.user_id) == []
    assert await rows(runtime, RecoveryCode, scene.world.user_id) == []
    assert await runtime.sessions.load(cookie_value(scene.other, SESSION_COOKIE)) is not None
    assert await runtime.sessions.load(cookie_value(scene.browser, SESSION_COOKIE)) is not None

    # Audited and announced as failed sign-ins are; the lock is the sign-in's own.
    reasons = await failure_reasons(runtime, scene.world.user_id)
    assert (reasons.count("invalid_credentials"), reasons.count("locked")) == (LOCKOUT["lock_after"], 1)
    [locked] = await audit(runtime, scene.world.user_id, "account_locked")
    assert locked.details["scope"] == "account_ip"
    assert LOCK_NOTICE in (await outbox_subjects(runtime))
    blocked = await sign_in(app.test_client(), scene.world.email, PASSWORD, HOME)
    assert blocked.status_code == 429 and "signing in is blocked" in await text(blocked)
    assert (await sign_in(app.test_client(), scene.world.email, PASSWORD, "192.0.2.99")).status_code == 303


# -- whose browser it is -----------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"lockout": LOCKOUT}], indirect=True)
async def test_the_account_wide_lock_spares_the_owners_browser_not_a_copied_session_or_a_token(
    app: Any, runtime: Any, guard_clock: GuardClock
) -> None:
    """Wrong sign-ins from everywhere lock the account for unknown browsers (ASVS 6.1.1): the owner's
    browser (its device cookie) still confirms with the password. The same session cookie in another
    browser, or an access token (no device cookie reaches the API), counts as an unknown browser."""
    world = await api_world(runtime)
    owner = app.test_client()
    assert (await sign_in(owner, world.email, PASSWORD, HOME)).status_code == 303
    access_token = await token_for(owner, world)
    for n in range(LOCKOUT["account_lock_after"]):
        await sign_in(app.test_client(), world.email, "distributed-guess-1", f"192.0.2.{n + 1}")
    assert await runtime.lockout.locked_for(world.email) == LOCKOUT["lock_duration"]

    # A copy of the session cookie in a browser the account never signed in from.
    thief = app.test_client()
    thief.set_cookie("localhost", SESSION_COOKIE, cookie_value(owner, SESSION_COOKIE) or "")
    token = csrf_from(await text(await thief.get("/account/security", scope_base=at("203.0.113.9"))))
    stolen = await thief.post(
        "/account/security/totp", form={"csrf_token": token, "password": PASSWORD}, scope_base=at("203.0.113.9")
    )
    assert stolen.status_code == 429 and "Too many wrong passwords" in await text(stolen)
    assert int(stolen.headers["Retry-After"]) == LOCKOUT["lock_duration"]

    via_api = await owner.post(
        "/api/account/mfa/totp", json={"password": PASSWORD}, headers=bearer(access_token), scope_base=at(HOME)
    )
    assert via_api.status_code == 429 and (await via_api.get_json())["error"] == "rate_limited"
    assert await rows(runtime, MfaCredential, world.user_id) == []

    # The owner's browser: accepted (a TOTP setup starts).
    token = csrf_from(await text(await owner.get("/account/security", scope_base=at(HOME))))
    mine = await owner.post(
        "/account/security/totp", form={"csrf_token": token, "password": PASSWORD}, scope_base=at(HOME)
    )
    assert mine.status_code == 200 and 'id="totp-secret"' in await text(mine)
    assert len(await rows(runtime, MfaCredential, world.user_id)) == 1


async def test_a_right_password_clears_that_ips_failures(app: Any, runtime: Any, guard_clock: GuardClock) -> None:
    """As at sign-in, the right password forgets this IP's earlier failures on the account: a user
    who mistypes now and then is never slowed down for it."""
    world = await api_world(runtime)
    browser = app.test_client()
    await login(browser, world.email)
    token = csrf_from(await text(await browser.get("/account/security")))
    for _ in range(3):
        for password in ("mistyped-password-1", "mistyped-password-2"):
            wrong = await browser.post("/account/security/totp", form={"csrf_token": token, "password": password})
            await assert_wrong_password(wrong)
        right = await browser.post("/account/security/totp", form={"csrf_token": token, "password": PASSWORD})
        assert right.status_code == 200
    assert await audit(runtime, world.user_id, "account_locked") == []
