"""What one password sign-in costs the server, counted (issue 14): the SQL statements sent to the
database (transaction control included) and the key-value store's operations (each one round trip
on Redis; on Redis also the commands sent), for the POST of the login form through to the redirect
with the session cookie, and for wrong passwords.

Measured before the sign-in was reworked (SQLite and PostgreSQL alike): 30 statements in nine
transactions and 17 key-value operations for a sign-in from a new device (the account read three
times), 22 statements and 16 operations from a known one, 25 and 15 signing in again in a signed-in
browser, 11 and 8 when a second factor is due next; 6 statements and 6 operations for a wrong
password (9 and 5 from a known browser). Now the account is read once and everything a sign-in
writes (the sign-in time, the device, the audit rows, the new device's notice) is one unit of work;
the bounds below are the figures measured after.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cost_helpers import Cost, counting
from tests.mfa_helpers import enable_totp
from tests.oauth_helpers import PASSWORD, World, add_user, csrf_from, login, make_world


@pytest.fixture
async def world(runtime: Any) -> World:
    # The outbox's worker would look for mail in sessions of its own while a request is counted.
    await runtime.outbox.stop()
    return await make_world(runtime)


async def _form(browser: Any, email: str, password: str) -> dict[str, str]:
    page = await browser.get("/login?return_to=/account")
    token = csrf_from(await page.get_data(as_text=True))
    return {"email": email, "password": password, "csrf_token": token, "return_to": "/account"}


async def _sign_in(browser: Any, runtime: Any, email: str, password: str, status: int, location: str = "") -> Cost:
    """POST the login form (its page fetched first, not counted); what the POST cost."""
    form = await _form(browser, email, password)
    with pytest.MonkeyPatch.context() as monkeypatch, counting(runtime, monkeypatch) as cost:
        response = await browser.post("/login", form=form)
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.headers.get("Location", "") == location
    return cost


def _with_cookies_of(app: Any, browser: Any, *names: str) -> Any:
    other = app.test_client()
    for cookie in browser.cookie_jar:
        if cookie.name in names:
            other.cookie_jar.set_cookie(cookie)
    return other


async def measure(app: Any, runtime: Any, world: World, clock: Any) -> dict[str, Cost]:
    costs: dict[str, Cost] = {}
    # The account's first browser: from then on, another one is a new device (announced by mail).
    assert (await login(app.test_client(), world.email)).status_code == 303
    browser = app.test_client()
    costs["new device"] = await _sign_in(browser, runtime, world.email, PASSWORD, 303, "/account")
    # The same browser signed out (its device cookie only): a known device.
    again = _with_cookies_of(app, browser, "idp_device")
    costs["known device"] = await _sign_in(again, runtime, world.email, PASSWORD, 303, "/account")
    # Signed in, and signing in again (a step-up, prompt=login): the session keeps its sid.
    costs["signed in again"] = await _sign_in(again, runtime, world.email, PASSWORD, 303, "/account")
    # An account with a second factor: the password, then the factor is asked for.
    bob = await add_user(runtime, "bob@example.com")
    await enable_totp(runtime, bob, clock)
    costs["second factor due"] = await _sign_in(
        app.test_client(), runtime, "bob@example.com", PASSWORD, 303, "/login/mfa"
    )
    wrong = "wrong-password-1"
    costs["wrong password"] = await _sign_in(app.test_client(), runtime, world.email, wrong, 401)
    known_browser = _with_cookies_of(app, browser, "idp_device")
    costs["wrong password, known device"] = await _sign_in(known_browser, runtime, world.email, wrong, 401)
    costs["unknown account"] = await _sign_in(app.test_client(), runtime, "nobody@example.com", wrong, 401)
    return costs


# Upper bounds: (SQL statements, key-value operations, Redis commands). The key-value operations
# include the PUBLISH of each committed audit row (live notifications) and of a changed account
# (the user cache).
BOUNDS = {
    "new device": (11, 13, 16),
    "known device": (8, 12, 15),
    "signed in again": (8, 11, 14),
    "second factor due": (6, 5, 5),
    "wrong password": (6, 3, 3),
    "wrong password, known device": (6, 3, 3),
    "unknown account": (6, 3, 3),
}


def transactions(cost: Cost) -> list[list[str]]:
    """The statements of each transaction, in order."""
    found: list[list[str]] = []
    for statement in cost.statements:
        if statement == "BEGIN":
            found.append([])
        elif statement not in ("COMMIT", "ROLLBACK"):
            found[-1].append(statement)
    return found


async def test_a_password_sign_in_reads_the_account_once_and_writes_once(
    app: Any, runtime: Any, world: World, clock: Any
) -> None:
    costs = await measure(app, runtime, world, clock)
    redis = getattr(runtime.kv, "_redis", None) is not None
    for label, cost in costs.items():
        statements, operations, commands = BOUNDS[label]
        assert len(cost.statements) <= statements, (label, cost.summary())
        assert len(cost.kv) <= operations, (label, cost.summary())
        if redis:
            assert len(cost.redis_commands) <= commands, (label, cost.redis_commands)
        # One read of the account (with what the attempt needs to know of its devices and second
        # factors), then one unit of work for whatever the attempt writes.
        assert cost.reads_of("users") == 1, (label, cost.summary())
        read, write = transactions(cost)
        assert read == ["SELECT users"], (label, cost.summary())
        assert "ROLLBACK" not in cost.statements and write, (label, cost.summary())

    _read, write = transactions(costs["new device"])
    assert sorted(set(write)) == [
        "INSERT audit_log",
        "INSERT known_devices",
        "INSERT outbox",
        "SELECT known_devices",
        "UPDATE users",
    ]
    assert write.count("INSERT audit_log") == 2  # login_succeeded, new_device_sign_in
    for label in ("known device", "signed in again"):
        assert transactions(costs[label])[1] == ["UPDATE users", "UPDATE known_devices", "INSERT audit_log"], label
    assert transactions(costs["second factor due"])[1] == ["UPDATE users"]
    for label in ("wrong password", "wrong password, known device", "unknown account"):
        assert transactions(costs[label])[1] == ["INSERT audit_log"], label
        # The limits counted before the check, the guard read in one round trip, the failure counted.
        assert costs[label].kv == ["hit_windows", "get_many", "hit_windows"], label
