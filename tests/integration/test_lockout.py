"""Brute-force protection of password sign-in, through the real /login form, on the configured
key-value store (in-process, or Redis when IDP_TEST_REDIS_URL is set): progressive delay and lock
per account and IP, the account-wide lock that spares browsers the owner used before, credential
stuffing from one IP, the owner's notice, and the ways out (time, an administrator, a reset)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from idp.accounts import account_status
from idp.events import PasswordResetCompleted
from idp.security.lockout import LoginGuard
from tests.mfa_helpers import SESSION_COOKIE, audit, outbox_subjects, text
from tests.oauth_helpers import PASSWORD, World, cookie_value, csrf_from, make_world

LOCKOUT = {
    "window": 900,
    "delay_after": 2,
    "max_delay": 4,
    "lock_after": 4,
    "lock_duration": 600,
    "account_lock_after": 6,
    "ip_failures": 8,
}
ATTACKER = "203.0.113.7"
OWNER_IP = "198.51.100.20"
LOCK_NOTICE = "Sign-in to your account was blocked after failed attempts"


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, "lockout": LOCKOUT, **getattr(request, "param", {})}


class Clock:
    """The guard's clock, moved by the test (the store's own expiry is not waited for)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(runtime: Any) -> Clock:
    import time

    value = Clock(time.time())
    guard: LoginGuard = runtime.lockout
    guard.clock = value
    return value


@pytest.fixture
async def world(runtime: Any) -> World:
    return await make_world(runtime)


async def attempt(client: Any, email: str, password: str, ip: str) -> Any:
    page = await client.get("/login", scope_base={"client": (ip, 40000)})
    form = {"email": email, "password": password, "csrf_token": csrf_from(await text(page)), "return_to": "/account"}
    return await client.post("/login", form=form, scope_base={"client": (ip, 40000)})


def login_error(html: str) -> str:
    match = re.search(r'id="login-error"[^>]*>([^<]*)<', html)
    assert match is not None, html
    return match.group(1)


async def assert_refused(response: Any, retry_after: int, phrase: str) -> None:
    assert response.status_code == 429, await text(response)
    assert response.headers["Retry-After"] == str(retry_after)
    body = await text(response)
    assert phrase in body, body
    assert 'id="login-form"' in body or 'id="login-submit"' in body  # the form stays, to try again later


async def test_delay_grows_then_one_ip_is_locked_out_of_the_account(
    app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    attacker = app.test_client()
    for _ in range(2):
        assert (await attempt(attacker, world.email, "wrong-guess-123456", ATTACKER)).status_code == 401

    # From the second failure on, each attempt waits (1 s, then 2 s …); the right password too.
    early = await attempt(attacker, world.email, PASSWORD, ATTACKER)
    await assert_refused(early, 1, "Wait 1 second before trying again")
    assert cookie_value(attacker, SESSION_COOKIE) is None
    clock.advance(1)
    assert (await attempt(attacker, world.email, "wrong-guess-123456", ATTACKER)).status_code == 401
    await assert_refused(await attempt(attacker, world.email, PASSWORD, ATTACKER), 2, "Wait 2 seconds")
    clock.advance(2)
    assert (await outbox_subjects(runtime)) == []

    # The fourth failure locks this IP out of this account for lock_duration, and the owner is told.
    assert (await attempt(attacker, world.email, "wrong-guess-123456", ATTACKER)).status_code == 401
    clock.advance(5)  # past any delay: what remains is the lock
    locked = await attempt(attacker, world.email, PASSWORD, ATTACKER)
    await assert_refused(locked, 595, "signing in is blocked for 10 minutes")
    assert cookie_value(attacker, SESSION_COOKIE) is None
    [locked_event] = await audit(runtime, world.user_id, "account_locked")
    assert locked_event.details["scope"] == "account_ip" and locked_event.outcome == "failure"
    assert (await outbox_subjects(runtime)) == [LOCK_NOTICE]
    refusals = [e for e in await audit(runtime, world.user_id, "login_failed") if e.details["reason"] == "locked"]
    assert len(refusals) == 3

    # The owner, elsewhere, is not locked out.
    owner = app.test_client()
    assert (await attempt(owner, world.email, PASSWORD, OWNER_IP)).status_code == 303
    assert cookie_value(owner, SESSION_COOKIE) is not None

    # The lock ends by itself.
    clock.advance(600)
    assert (await attempt(attacker, world.email, PASSWORD, ATTACKER)).status_code == 303


async def test_a_correct_password_clears_that_ips_failures(app: Any, world: World, clock: Clock) -> None:
    browser = app.test_client()
    assert (await attempt(browser, world.email, "typo-in-password-1", OWNER_IP)).status_code == 401
    assert (await attempt(browser, world.email, PASSWORD, OWNER_IP)).status_code == 303
    # One more slip is again the first, not the second: no delay.
    assert (await attempt(app.test_client(), world.email, "typo-in-password-1", OWNER_IP)).status_code == 401
    assert (await attempt(app.test_client(), world.email, PASSWORD, OWNER_IP)).status_code == 303


async def test_account_lock_from_many_ips_spares_the_owners_browser(
    app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    owner = app.test_client()
    assert (await attempt(owner, world.email, PASSWORD, OWNER_IP)).status_code == 303  # a known device now

    # A distributed guess: one failure from each of six addresses reaches account_lock_after.
    for n in range(6):
        response = await attempt(app.test_client(), world.email, "distributed-guess-1", f"192.0.2.{n + 1}")
        assert response.status_code == 401
    [event] = await audit(runtime, world.user_id, "account_locked")
    assert (event.details["scope"], event.details["duration"]) == ("account", 600)

    # Any browser that never signed in to the account is refused, from anywhere, right password or not …
    stranger = await attempt(app.test_client(), world.email, PASSWORD, "192.0.2.99")
    await assert_refused(stranger, 600, "signing in is blocked for 10 minutes")
    # … but the owner's browser (its device cookie) still signs in, from a new address too.
    again = await attempt(owner, world.email, PASSWORD, "198.51.100.77")
    assert again.status_code == 303


async def test_locks_do_not_reveal_whether_an_account_exists(
    app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    responses = {}
    for email in (world.email, "nobody-here@example.com"):
        for n in range(6):
            await attempt(app.test_client(), email, "distributed-guess-1", f"192.0.2.{n + 10}")
        responses[email] = await attempt(app.test_client(), email, "distributed-guess-1", "192.0.2.50")
    real, unknown = responses.values()
    assert real.status_code == unknown.status_code == 429
    assert real.headers["Retry-After"] == unknown.headers["Retry-After"]
    assert login_error(await text(real)) == login_error(await text(unknown))
    # Only the real owner is mailed.
    assert (await outbox_subjects(runtime)) == [LOCK_NOTICE]


async def test_credential_stuffing_from_one_ip_is_throttled(app: Any, world: World, clock: Clock) -> None:
    for n in range(8):  # one failure each on eight different accounts
        assert (
            await attempt(app.test_client(), f"victim{n}@example.com", "leaked-pass-1", ATTACKER)
        ).status_code == 401
    # Now this address may not try any account, not even with the right password.
    blocked = await attempt(app.test_client(), world.email, PASSWORD, ATTACKER)
    await assert_refused(blocked, 900, "signing in is blocked for 15 minutes")
    # Other addresses are unaffected.
    assert (await attempt(app.test_client(), world.email, PASSWORD, OWNER_IP)).status_code == 303


async def test_an_administrator_unlocks(app: Any, runtime: Any, world: World, clock: Clock) -> None:
    for n in range(6):
        await attempt(app.test_client(), world.email, "distributed-guess-1", f"192.0.2.{n + 1}")
    assert await runtime.lockout.locked_for(world.email) == 600
    await assert_refused(await attempt(app.test_client(), world.email, PASSWORD, "192.0.2.80"), 600, "blocked")

    user = await account_status.find_user(runtime.accounts, world.email.upper())
    assert await account_status.unlock(runtime.accounts, runtime.lockout, runtime.limits, user) is True
    assert await runtime.lockout.locked_for(world.email) == 0
    assert (await attempt(app.test_client(), world.email, PASSWORD, "192.0.2.80")).status_code == 303
    [unlocked] = await audit(runtime, world.user_id, "account_unlocked")
    assert unlocked.details["reason"] == "admin"
    # Nothing left to lift.
    assert await account_status.unlock(runtime.accounts, runtime.lockout, runtime.limits, user) is False


async def test_a_completed_password_reset_unlocks(app: Any, runtime: Any, world: World, clock: Clock) -> None:
    for n in range(6):
        await attempt(app.test_client(), world.email, "distributed-guess-1", f"192.0.2.{n + 1}")
    assert await runtime.lockout.locked_for(world.email) == 600
    await runtime.events.publish(PasswordResetCompleted(user_id=world.user_id, sessions_ended=0))
    assert await runtime.lockout.locked_for(world.email) == 0
    [unlocked] = await audit(runtime, world.user_id, "account_unlocked")
    assert unlocked.details["reason"] == "password_reset"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"lockout": {**LOCKOUT, "notify": False}, "sessions": {"notify_new_device": False}}],
    indirect=True,
)
async def test_notices_can_be_switched_off(app: Any, runtime: Any, world: World, clock: Clock) -> None:
    for _ in range(4):
        await attempt(app.test_client(), world.email, "wrong-guess-123456", ATTACKER)
        clock.advance(5)
    assert len(await audit(runtime, world.user_id, "account_locked")) == 1  # audited all the same
    assert (await outbox_subjects(runtime)) == []


# -- plain rate limits on sign-in --------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings_overrides",
    [{"lockout": LOCKOUT, "rate_limits": {"login_per_ip": {"requests": 3, "window": 120}}}],
    indirect=True,
)
async def test_sign_in_attempts_per_ip_are_limited(app: Any, runtime: Any, world: World) -> None:
    for n in range(3):
        assert (await attempt(app.test_client(), f"someone{n}@example.com", "x", ATTACKER)).status_code == 401
    limited = await attempt(app.test_client(), world.email, PASSWORD, ATTACKER)
    await assert_refused(limited, 120, "Too many sign-in attempts. Wait 2 minutes")
    assert (await attempt(app.test_client(), world.email, PASSWORD, OWNER_IP)).status_code == 303


@pytest.mark.parametrize(
    "settings_overrides",
    [{"lockout": LOCKOUT, "rate_limits": {"login_per_account": {"requests": 2, "window": 60}}}],
    indirect=True,
)
async def test_sign_in_attempts_per_account_are_limited(app: Any, world: World) -> None:
    assert (await attempt(app.test_client(), world.email, PASSWORD, "192.0.2.1")).status_code == 303
    assert (await attempt(app.test_client(), world.email.upper(), PASSWORD, "192.0.2.2")).status_code == 303
    limited = await attempt(app.test_client(), world.email, PASSWORD, "192.0.2.3")
    await assert_refused(limited, 60, "Wait 60 seconds")


# -- the per-account limit is no lockout of the owner (ASVS 6.1.1, 6.3.1; NIST SP 800-63B §3.2.2) -----
# Only the per-account rate limit is in play here: the account-wide lock is out of reach.
NO_ACCOUNT_LOCK = {**LOCKOUT, "account_lock_after": 100000, "ip_failures": 100000}


@pytest.mark.parametrize(
    "settings_overrides",
    [{"lockout": NO_ACCOUNT_LOCK, "rate_limits": {"login_per_account": {"requests": 30, "window": 300}}}],
    indirect=True,
)
async def test_wrong_passwords_from_everywhere_do_not_keep_the_owners_browser_out(
    app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    """Security review M1: 31 wrong passwords for the account from 31 addresses exhaust the
    per-account limit (30 per 5 minutes, the default) for every browser that never signed in to
    it; the browser the owner always uses still signs in."""
    owner = app.test_client()
    assert (await attempt(owner, world.email, PASSWORD, OWNER_IP)).status_code == 303  # a known device now
    device = cookie_value(owner, "idp_device")
    assert device is not None

    # The owner's first sign-in (from an unknown browser then) was attempt 1 of 30.
    statuses = [
        (await attempt(app.test_client(), world.email, f"guess-{n}-xxxxxxxx", f"192.0.2.{n + 1}")).status_code
        for n in range(31)
    ]
    assert statuses == [401] * 29 + [429] * 2

    # Any other browser, right password or not, is refused, from anywhere …
    stranger = await attempt(app.test_client(), world.email, PASSWORD, "192.0.2.200")
    await assert_refused(stranger, 300, "Too many sign-in attempts. Wait 5 minutes")
    assert cookie_value(app.test_client(), SESSION_COOKIE) is None
    # … but the owner's browser signs in, at home and elsewhere, however long the attack goes on.
    again = await attempt(owner, world.email, PASSWORD, OWNER_IP)
    assert again.status_code == 303, await text(again)
    assert again.headers["Location"] == "/account"
    roaming = await attempt(owner, world.email, PASSWORD, "198.51.100.77")
    assert roaming.status_code == 303
    assert cookie_value(owner, "idp_device") == device  # the same browser, recognised again
    # Its sign-ins did not count against the strangers' limit either, nor free it.
    await assert_refused(await attempt(app.test_client(), world.email, PASSWORD, "192.0.2.201"), 300, "Wait 5")
    assert [e.details["reason"] for e in await audit(runtime, world.user_id, "login_failed")].count("locked") == 0


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "lockout": NO_ACCOUNT_LOCK,
            "rate_limits": {
                "login_per_account": {"requests": 2, "window": 300},
                "login_per_ip": {"requests": 6, "window": 300},
            },
        }
    ],
    indirect=True,
)
async def test_the_owners_browser_still_meets_the_per_ip_limit_and_the_lock_of_its_ip(
    app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    """The exemption is only from what anyone elsewhere can drive: from the owner's browser, guesses
    at its own address still slow down and lock (per account and IP), and its IP's limit holds."""
    owner = app.test_client()
    assert (await attempt(owner, world.email, PASSWORD, OWNER_IP)).status_code == 303  # 1 of 6 from this IP
    for _ in range(2):  # 2 and 3: failures (the second starts a delay)
        assert (await attempt(owner, world.email, "wrong-guess-123456", OWNER_IP)).status_code == 401
    await assert_refused(await attempt(owner, world.email, PASSWORD, OWNER_IP), 1, "Wait 1 second")  # 4
    clock.advance(1)
    assert (await attempt(owner, world.email, "wrong-guess-123456", OWNER_IP)).status_code == 401  # 5
    clock.advance(2)
    assert (await attempt(owner, world.email, "wrong-guess-123456", OWNER_IP)).status_code == 401  # 6: locked
    clock.advance(4)
    await assert_refused(await attempt(owner, world.email, PASSWORD, OWNER_IP), 300, "Too many sign-in attempts")
    # From another address the same browser is over neither that IP's limit nor its lock.
    assert (await attempt(owner, world.email, PASSWORD, "198.51.100.77")).status_code == 303
    [locked] = await audit(runtime, world.user_id, "account_locked")
    assert locked.details["scope"] == "account_ip"
