"""Who may sign in, whatever proved the user: an account that exists, is not disabled and has a
confirmed address. Each way of signing in answers a refusal its own way, pinned here: the password
form names the reason, the passkey sign-in refuses in one sentence, and the step after the password
sends the browser back to the start. None of them makes a session."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from idp.accounts.signin.pending import PENDING_COOKIE
from idp.storage.models import User
from tests.integration.test_passkey_login import add_passkey, passwordless
from tests.mfa_helpers import SESSION_COOKIE, Clock, audit, enable_totp, text, totp_answer
from tests.oauth_helpers import World, add_user, cookie_value, login
from tests.webauthn_soft import SoftAuthenticator


async def set_user(runtime: Any, user_id: str, **values: Any) -> None:
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == user_id).values(**values))


async def failures(runtime: Any, user_id: str) -> list[tuple[str, str]]:
    return [(row.details["reason"], row.details["factor"]) for row in await audit(runtime, user_id, "login_failed")]


async def test_the_password_form_names_the_refusal(client: Any, runtime: Any) -> None:
    disabled = await add_user(runtime, "dora@example.com", disabled=True)
    unverified = await add_user(runtime, "ursula@example.com", verified=False)

    refused = await login(client, "dora@example.com")
    assert refused.status_code == 401
    assert "This account cannot sign in. Contact the administrator." in await text(refused)
    unconfirmed = await login(client, "ursula@example.com")
    assert unconfirmed.status_code == 401
    assert "Confirm your email address first, using the link we sent you." in await text(unconfirmed)

    assert cookie_value(client, SESSION_COOKIE) is None
    assert await failures(runtime, disabled) == [("disabled", "password")]
    assert await failures(runtime, unverified) == [("unverified", "password")]


async def test_a_wrong_password_for_a_disabled_account_is_only_a_wrong_password(client: Any, runtime: Any) -> None:
    """The account's state is told only to whoever knows the password."""
    disabled = await add_user(runtime, "dora@example.com", disabled=True)
    response = await login(client, "dora@example.com", password="not-the-password-at-all")
    assert response.status_code == 401
    assert "cannot sign in" not in await text(response)
    assert await failures(runtime, disabled) == [("invalid_credentials", "password")]


async def test_a_passkey_of_a_disabled_account_signs_nobody_in(
    client: Any, app: Any, runtime: Any, world: World
) -> None:
    authenticator = await _passkey_of(client, world)
    await set_user(runtime, world.user_id, disabled=True)

    browser = app.test_client()
    response = await passwordless(browser, authenticator, "/account")
    assert response.status_code == 403
    assert await response.get_json() == {
        "error": "login_refused",
        "error_description": "This account cannot sign in. Contact the administrator.",
    }
    assert cookie_value(browser, SESSION_COOKIE) is None
    assert await failures(runtime, world.user_id) == [("disabled", "webauthn")]


async def test_a_passkey_sign_in_records_every_refusal_as_disabled(
    client: Any, app: Any, runtime: Any, world: World
) -> None:
    """An unconfirmed address gets the same answer and the same audit reason as a disabled account
    on this path (the password form says "unverified"). No account reaches this state through the
    product: a passkey is added after a sign-in, which needs the address confirmed, and nothing
    unconfirms it."""
    authenticator = await _passkey_of(client, world)
    await set_user(runtime, world.user_id, email_verified=False)

    browser = app.test_client()
    response = await passwordless(browser, authenticator, "/account")
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "login_refused"
    assert cookie_value(browser, SESSION_COOKIE) is None
    assert await failures(runtime, world.user_id) == [("disabled", "webauthn")]


async def test_an_account_disabled_before_its_second_factor_gets_no_session(
    client: Any, runtime: Any, world: World, clock: Clock
) -> None:
    secret, _codes = await enable_totp(runtime, world.user_id, clock)
    assert (await login(client, world.email, return_to="/account")).headers["Location"] == "/login/mfa"
    await set_user(runtime, world.user_id, disabled=True)

    response = await totp_answer(secret, clock)(client)
    assert response.status_code == 400
    assert "Your sign-in has expired. Sign in again." in await text(response)
    assert cookie_value(client, SESSION_COOKIE) is None
    assert cookie_value(client, PENDING_COOKIE) is None
    assert await audit(runtime, world.user_id, "login_succeeded") == []
    assert await failures(runtime, world.user_id) == []


async def _passkey_of(client: Any, world: World) -> SoftAuthenticator:
    authenticator = SoftAuthenticator()
    await login(client, world.email)
    await add_passkey(client, authenticator)
    return authenticator
