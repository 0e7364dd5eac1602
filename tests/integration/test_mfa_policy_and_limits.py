"""The MFA-required policy (enrolment at sign-in) and the rate limits on second-factor attempts."""

from __future__ import annotations

import re
from typing import Any

import pyotp
import pytest
from sqlalchemy import update

from idp.accounts.security import mfa
from idp.storage.models import User
from tests.mfa_helpers import SESSION_COOKIE, Clock, audit, enable_totp, post_code, text
from tests.oauth_helpers import WEB_REDIRECT, World, authorize, cookie_value, csrf_from, login, query_of


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """conftest's settings plus a test's indirect parameter (a dict of sections)."""
    return {**settings_overrides, **getattr(request, "param", {})}


# -- rate limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limits": {"mfa_per_account": {"requests": 3, "window": 300}}}], indirect=True
)
async def test_code_attempts_are_rate_limited_per_account(
    client: Any, app: Any, runtime: Any, world: World, clock: Clock
) -> None:
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    await login(client, world.email)
    for _ in range(3):
        assert (await post_code(client, "totp", "000000")).status_code == 401
    limited = await post_code(client, "totp", pyotp.TOTP(secret).at(clock.now))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) == 300
    assert "Too many attempts" in await text(limited)
    assert cookie_value(client, SESSION_COOKIE) is None
    # The limit is the account's, not the browser's: another browser (same password) is refused too.
    other = app.test_client()
    await login(other, world.email)
    assert (await post_code(other, "totp", pyotp.TOTP(secret).at(clock.now))).status_code == 429
    [event] = [e for e in await audit(runtime, world.user_id, "login_failed") if e.details["reason"] == "rate_limited"][
        :1
    ]
    assert event.details["factor"] == "second_factor"


# -- policy: MFA required ----------------------------------------------------------------------------


def _credential_id(html: str) -> str:
    match = re.search(r'name="credential_id" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


def _secret(html: str) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7]+)<', html)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize(
    "settings_overrides", [{"mfa": {"required": "all"}}, {"mfa": {"required": "admins"}}], indirect=True
)
async def test_policy_leads_users_without_a_factor_through_enrolment(
    client: Any, runtime: Any, world: World, clock: Clock
) -> None:
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(is_admin=True))
    response, _ = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email)
    assert response.headers["Location"] == "/login/setup-mfa"
    assert cookie_value(client, SESSION_COOKIE) is None
    page = await client.get("/login/setup-mfa")
    html = await text(page)
    assert 'id="mfa-required"' in html and 'src="data:image/svg+xml' in html
    credential_id, secret = _credential_id(html), _secret(html)
    token = csrf_from(html)

    wrong = await client.post(
        "/login/setup-mfa/totp", form={"csrf_token": token, "credential_id": credential_id, "code": "000000"}
    )
    assert wrong.status_code == 400
    # The same secret is shown again, so the entry already made in the app keeps working.
    assert _secret(await text(wrong)) == secret and _credential_id(await text(wrong)) == credential_id

    codes_page = await client.post(
        "/login/setup-mfa/totp",
        form={"csrf_token": token, "credential_id": credential_id, "code": pyotp.TOTP(secret).at(clock.now)},
    )
    assert codes_page.status_code == 200
    codes = re.findall(r"<li><code>([0-9a-z-]+)</code></li>", await text(codes_page))
    assert len(codes) == 10
    assert cookie_value(client, SESSION_COOKIE) is None  # not until the codes were acknowledged

    done = await client.post("/login/setup-mfa/done", form={"csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"].startswith("/authorize/resume/")
    final = await client.get(done.headers["Location"])
    consent_path = final.headers["Location"]
    assert consent_path.startswith("/authorize/consent/")  # a third-party client asks for consent
    consent = await client.get(consent_path)
    final = await client.post(consent_path, form={"csrf_token": csrf_from(await text(consent)), "decision": "allow"})
    code = query_of(final.headers["Location"])["code"]
    assert code
    session = await runtime.sessions.load(cookie_value(client, SESSION_COOKIE))
    assert session is not None and session.amr == ["pwd", "otp", "mfa"]
    assert (await mfa.factor_status(runtime.db, world.user_id)).totp


@pytest.mark.parametrize("settings_overrides", [{"mfa": {"required": "admins"}}], indirect=True)
async def test_admins_policy_leaves_other_users_alone(client: Any, runtime: Any, world: World) -> None:
    response = await login(client, world.email, return_to="/account")
    assert response.headers["Location"] == "/account"
    assert cookie_value(client, SESSION_COOKIE) is not None


async def test_setup_at_login_needs_a_pending_enrolment(client: Any, runtime: Any, world: World, clock: Clock) -> None:
    assert (await client.get("/login/setup-mfa")).headers["Location"] == "/login"
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    await login(client, world.email)  # a second step, not an enrolment
    assert (await client.get("/login/setup-mfa")).headers["Location"] == "/login"
    page = await client.get("/login/mfa")
    done = await client.post("/login/setup-mfa/done", form={"csrf_token": csrf_from(await text(page))})
    assert done.status_code == 400
    assert cookie_value(client, SESSION_COOKIE) is None
    assert secret  # TOTP still the way in
