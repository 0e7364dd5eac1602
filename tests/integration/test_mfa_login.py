"""Sign-in with a second factor: the step after the password (TOTP, recovery code), amr/acr in the
ID token for each path, step-up with acr_values and max_age, the MFA-required policy with
enrolment at sign-in, rate limits on code attempts, and that a password reset doesn't bypass MFA.
Passkey paths are in test_passkey_login.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from idp.accounts.security import mfa
from idp.accounts.signin import authn
from idp.accounts.signin.pending import PENDING_COOKIE
from idp.storage.models import RecoveryCode
from tests.mfa_helpers import (
    SESSION_COOKIE,
    Clock,
    audit,
    enable_totp,
    id_token_claims,
    outbox_subjects,
    post_code,
    recovery_answer,
    text,
    totp_answer,
)
from tests.oauth_helpers import (
    PASSWORD,
    WEB_REDIRECT,
    World,
    age_session,
    authorize,
    cookie_value,
    csrf_from,
    login,
    query_of,
)

# -- the step after the password -------------------------------------------------------------------


async def test_password_alone_gives_pwd_and_single_factor_acr(client: Any, world: World) -> None:
    claims = await id_token_claims(client, world)
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == authn.ACR_SINGLE_FACTOR


async def test_totp_user_gets_no_session_until_the_code(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    secret, _codes = await enable_totp(runtime, world.user_id, clock)
    response = await login(client, world.email, return_to="/account")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login/mfa"
    assert cookie_value(client, SESSION_COOKIE) is None
    assert cookie_value(client, PENDING_COOKIE)
    # Nothing behind the password is reachable yet.
    assert (await client.get("/account")).headers["Location"].startswith("/login")

    page = await client.get("/login/mfa")
    html = await text(page)
    assert 'id="totp-form"' in html and 'id="passkey-second-factor"' not in html
    assert page.headers["Cache-Control"] == "no-store"

    done = await totp_answer(secret, clock)(client)
    assert done.status_code == 303 and done.headers["Location"] == "/account"
    session = await runtime.sessions.load(cookie_value(client, SESSION_COOKIE))
    assert session is not None and session.user_id == world.user_id
    assert session.amr == ["pwd", "otp", "mfa"] and session.acr == authn.ACR_MFA
    assert cookie_value(client, PENDING_COOKIE) is None
    [event] = await audit(runtime, world.user_id, "login_succeeded")
    assert event.details["amr"] == ["pwd", "otp", "mfa"]


async def test_totp_sign_in_puts_otp_and_mfa_in_the_id_token(
    client: Any, runtime: Any, world: World, clock: Clock
) -> None:
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    claims = await id_token_claims(client, world, second_factor=totp_answer(secret, clock))
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == authn.ACR_MFA


async def test_wrong_code_is_refused_and_audited(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    await login(client, world.email)
    wrong = pyotp.TOTP(secret).at(clock.now - timedelta(minutes=5))
    response = await post_code(client, "totp", wrong)
    assert response.status_code == 401
    assert 'id="mfa-error"' in await text(response)
    assert cookie_value(client, SESSION_COOKIE) is None
    [failure] = await audit(runtime, world.user_id, "login_failed")
    assert {key: failure.details[key] for key in ("reason", "factor")} == {"reason": "invalid_code", "factor": "totp"}
    assert failure.outcome == "failure"
    # The pending sign-in survives a typo.
    assert (await post_code(client, "totp", pyotp.TOTP(secret).at(clock.now))).status_code == 303


async def test_a_code_works_once_even_for_a_second_sign_in(
    client: Any, app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    code = pyotp.TOTP(secret).at(clock.now)
    await login(client, world.email)
    assert (await post_code(client, "totp", code)).status_code == 303

    other = app.test_client()
    await login(other, world.email)
    replay = await post_code(other, "totp", code)
    assert replay.status_code == 401
    assert cookie_value(other, SESSION_COOKIE) is None
    # A code of the previous step (inside the ±1 window) is refused too: it is older than the one used.
    previous = pyotp.TOTP(secret).at(clock.now - timedelta(seconds=30))
    assert (await post_code(other, "totp", previous)).status_code == 401
    clock.advance()
    assert (await post_code(other, "totp", pyotp.TOTP(secret).at(clock.now))).status_code == 303


async def test_window_edges_at_sign_in(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    clock.advance(120)
    await login(client, world.email)
    totp = pyotp.TOTP(secret)
    assert (await post_code(client, "totp", totp.at(clock.now - timedelta(seconds=60)))).status_code == 401
    assert (await post_code(client, "totp", totp.at(clock.now + timedelta(seconds=60)))).status_code == 401
    # One step behind (a slow phone) is still accepted.
    assert (await post_code(client, "totp", totp.at(clock.now - timedelta(seconds=30)))).status_code == 303


async def test_the_pending_sign_in_is_single_use(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    await login(client, world.email)
    page = await client.get("/login/mfa")
    token = csrf_from(await text(page))
    pending_cookie = cookie_value(client, PENDING_COOKIE)
    assert (await post_code(client, "totp", pyotp.TOTP(secret).at(clock.now))).status_code == 303
    # Replaying the pending cookie (e.g. stolen before it was cleared) gets nothing.
    client.set_cookie("localhost", PENDING_COOKIE, pending_cookie or "")
    clock.advance()
    again = await client.post(
        "/login/mfa", form={"csrf_token": token, "method": "totp", "code": pyotp.TOTP(secret).at(clock.now)}
    )
    assert again.status_code == 400
    assert "Sign in again" in await text(again)


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"method": "sms", "code": "123456"}, 400),
        ({"code": "123456"}, 400),
    ],
)
async def test_bad_second_step_input(
    client: Any, runtime: Any, world: World, clock: Clock, form: dict[str, str], status: int
) -> None:
    await enable_totp(runtime, world.user_id, clock)
    await login(client, world.email)
    page = await client.get("/login/mfa")
    response = await client.post("/login/mfa", form={"csrf_token": csrf_from(await text(page)), **form})
    assert response.status_code == status
    assert cookie_value(client, SESSION_COOKIE) is None


async def test_second_step_needs_csrf_and_a_pending_sign_in(client: Any, runtime: Any, world: World) -> None:
    assert (await client.get("/login/mfa")).headers["Location"] == "/login"
    page = await client.get("/login")
    token = csrf_from(await text(page))
    response = await client.post("/login/mfa", form={"csrf_token": token, "method": "totp", "code": "123456"})
    assert response.status_code == 400
    await login(client, world.email)  # no second factor: signed in directly
    assert (await client.post("/login/mfa", form={"method": "totp", "code": "1"})).status_code == 403


# -- recovery codes ----------------------------------------------------------------------------------


async def test_recovery_code_signs_in_once_and_is_notified(
    client: Any, app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    _secret, codes = await enable_totp(runtime, world.user_id, clock)
    claims = await id_token_claims(client, world, second_factor=recovery_answer(codes[3].upper()))
    assert claims["amr"] == ["pwd", "mfa"]
    assert claims["acr"] == authn.ACR_MFA
    async with runtime.db.session() as session:
        used = (await session.execute(select(RecoveryCode).where(RecoveryCode.used_at.is_not(None)))).scalars().all()
    assert len(used) == 1
    [event] = await audit(runtime, world.user_id, "recovery_code_used")
    assert (event.details["remaining"], event.details["factor"]) == (9, "recovery_code")
    assert "A security setting of your account changed" in (await outbox_subjects(runtime))

    other = app.test_client()
    await login(other, world.email)
    reused = await recovery_answer(codes[3])(other)
    assert reused.status_code == 401
    assert cookie_value(other, SESSION_COOKIE) is None


# -- step-up -------------------------------------------------------------------------------------------


async def test_acr_values_step_up_asks_for_the_second_factor(
    client: Any, runtime: Any, world: World, clock: Clock
) -> None:
    # Signed in with the password alone, before TOTP was turned on.
    first = await id_token_claims(client, world)
    assert first["acr"] == authn.ACR_SINGLE_FACTOR
    secret, _ = await enable_totp(runtime, world.user_id, clock)

    # No acr requested: single sign-on goes on with what the session has.
    assert (await id_token_claims(client, world))["acr"] == authn.ACR_SINGLE_FACTOR

    # prompt=none can't step up.
    response, _ = await authorize(
        client, world.web_id, WEB_REDIRECT, prompt="none", acr_values=authn.ACR_MFA, email=world.email
    )
    assert query_of(response.headers["Location"])["error"] == "login_required"

    stepped = await id_token_claims(client, world, second_factor=totp_answer(secret, clock), acr_values=authn.ACR_MFA)
    assert stepped["acr"] == authn.ACR_MFA
    assert stepped["amr"] == ["pwd", "otp", "mfa"]
    assert stepped["auth_time"] >= first["auth_time"]

    # The new session satisfies the class from now on, without another prompt.
    again = await id_token_claims(client, world, acr_values=f"{authn.ACR_MFA} {authn.ACR_SINGLE_FACTOR}")
    assert again["acr"] == authn.ACR_MFA


async def test_acr_not_reachable_is_reported_truthfully(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    # No second factor at all: no pointless re-login, and the ID token says what happened.
    claims = await id_token_claims(client, world, acr_values=authn.ACR_MFA)
    assert claims["acr"] == authn.ACR_SINGLE_FACTOR
    # TOTP only, phishing-resistant asked: one re-login, then the best achieved (no loop).
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    stepped = await id_token_claims(
        client, world, second_factor=totp_answer(secret, clock), acr_values=authn.ACR_PHISHING_RESISTANT
    )
    assert stepped["acr"] == authn.ACR_MFA
    # Unknown acr values are ignored (acr_values is a voluntary request).
    assert (await id_token_claims(client, world, acr_values="urn:example:gold"))["acr"] == authn.ACR_MFA


async def test_max_age_requires_the_second_factor_again(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    first = await id_token_claims(client, world, second_factor=totp_answer(secret, clock))
    await age_session(runtime, client, 600)
    clock.advance()
    asked: list[str] = []
    answer = totp_answer(secret, clock)

    async def counting(c: Any) -> Any:
        asked.append("totp")
        return await answer(c)

    claims = await id_token_claims(client, world, second_factor=counting, max_age="300")
    assert asked == ["totp"]
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["auth_time"] >= first["auth_time"]


def test_acr_ordering() -> None:
    assert authn.satisfies(authn.ACR_PHISHING_RESISTANT, [authn.ACR_MFA])
    assert not authn.satisfies(authn.ACR_MFA, [authn.ACR_PHISHING_RESISTANT])
    assert authn.satisfies(None, ["urn:unknown"])
    assert authn.acr_claim(authn.ACR_PHISHING_RESISTANT, ["urn:x", authn.ACR_MFA]) == authn.ACR_MFA
    assert authn.acr_claim(authn.ACR_MFA, [authn.ACR_PHISHING_RESISTANT]) == authn.ACR_MFA
    assert authn.password_and(authn.WEBAUTHN, backup_eligible=True).amr == ("pwd", "swk", "mfa")
    assert authn.passkey_alone(backup_eligible=False) == authn.Authentication(("hwk", "mfa"), "phr")


async def test_discovery_lists_the_acr_values(client: Any) -> None:
    metadata = await (await client.get("/.well-known/openid-configuration")).get_json()
    assert metadata["acr_values_supported"] == list(authn.ACR_VALUES)
    assert "amr" in metadata["claims_supported"] and "acr" in metadata["claims_supported"]


# -- password reset does not bypass MFA (ASVS 6.4.3) ---------------------------------------------------


async def test_password_reset_keeps_the_second_factor(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    from idp.accounts import links
    from idp.accounts.recovery import passwords

    await enable_totp(runtime, world.user_id, clock)
    token = await links.issue(runtime.db, purpose=links.RESET_PASSWORD, user_id=world.user_id, ttl=600)
    new_password = "quiet-harbour-lamp-1973"
    await passwords.reset_password(runtime.accounts, token, new_password, ip="127.0.0.1")
    response = await login(client, world.email, password=new_password)
    assert response.headers["Location"] == "/login/mfa"
    assert cookie_value(client, SESSION_COOKIE) is None
    assert (await mfa.factor_status(runtime.db, world.user_id)).totp


async def test_second_factor_allows_the_shorter_password_length(
    client: Any, runtime: Any, world: World, clock: Clock
) -> None:
    from idp.accounts.recovery import passwords
    from idp.accounts.users import AccountError

    await login(client, world.email)
    session = await runtime.sessions.load(cookie_value(client, SESSION_COOKIE))
    short = "vB7#qz!Lm2"  # 10 characters: below min_length (15), above min_length_with_mfa (8)
    with pytest.raises(AccountError):
        await passwords.change_password(runtime.accounts, session.user_id, PASSWORD, short, keep=session, ip=None)
    await enable_totp(runtime, world.user_id, clock)
    await passwords.change_password(runtime.accounts, session.user_id, PASSWORD, short, keep=session, ip=None)
