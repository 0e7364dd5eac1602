"""Managing second factors: the /account/security page and the account API (/api/account/mfa,
/api/account/passkeys). Every change needs the password (ASVS 7.5.1), removing TOTP a current code
too; each is audited; refusals change nothing."""

from __future__ import annotations

import re
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from idp.accounts.security import mfa, passkeys
from idp.storage.models import AuditEvent, MfaCredential, RecoveryCode
from tests.integration.test_account_api import api_world, bearer, token_for
from tests.integration.test_passkey_login import add_passkey, page_token, post_json
from tests.mfa_helpers import ORIGIN, SESSION_COOKIE, Clock, enable_totp, outbox_subjects, text
from tests.oauth_helpers import PASSWORD, World, cookie_value, csrf_from, login, make_world
from tests.webauthn_soft import SoftAuthenticator


async def events(runtime: Any, user_id: str) -> list[str]:
    async with runtime.db.session() as session:
        query = select(AuditEvent.event).where(AuditEvent.subject_id == user_id).order_by(AuditEvent.id)
        return list((await session.execute(query)).scalars())


async def rows(runtime: Any, model: Any, user_id: str) -> list[Any]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(model).where(model.user_id == user_id))).scalars())


def codes_in(html: str) -> list[str]:
    return re.findall(r"<li><code>([0-9a-z-]+)</code></li>", html)


# -- the security page -------------------------------------------------------------------------------


async def test_security_page_needs_a_session(client: Any) -> None:
    response = await client.get("/account/security")
    assert response.status_code == 303 and response.headers["Location"] == "/login?return_to=/account/security"


async def test_turn_totp_on_regenerate_codes_and_turn_it_off(client: Any, app: Any, runtime: Any, clock: Clock) -> None:
    world = await make_world(runtime)
    other_browser = app.test_client()
    await login(other_browser, world.email)
    await login(client, world.email)
    page = await text(await client.get("/account/security"))
    assert 'id="totp-status">Off.' in page
    token = csrf_from(page)

    wrong = await client.post("/account/security/totp", form={"csrf_token": token, "password": "wrong"})
    assert wrong.status_code == 400 and "The password is not correct." in await text(wrong)
    assert await rows(runtime, MfaCredential, world.user_id) == []

    setup = await text(await client.post("/account/security/totp", form={"csrf_token": token, "password": PASSWORD}))
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', setup)
    credential = re.search(r'name="credential_id" value="([^"]+)"', setup)
    assert secret and credential and 'src="data:image/svg+xml' in setup
    form = {"csrf_token": token, "credential_id": credential.group(1)}
    retry = await client.post("/account/security/totp/confirm", form={**form, "code": "000000"})
    assert retry.status_code == 400 and secret.group(1) in await text(retry)  # the same secret again
    confirmed = await client.post(
        "/account/security/totp/confirm", form={**form, "code": pyotp.TOTP(secret.group(1)).at(clock.now)}
    )
    first_codes = codes_in(await text(confirmed))
    assert len(first_codes) == 10
    assert 'id="totp-status">On.' in await text(await client.get("/account/security"))

    regenerated = await client.post(
        "/account/security/recovery-codes", form={"csrf_token": token, "password": PASSWORD}
    )
    new_codes = codes_in(await text(regenerated))
    assert len(new_codes) == 10 and not set(new_codes) & set(first_codes)
    assert not await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, world.user_id, first_codes[0])

    clock.advance()
    bad = await client.post(
        "/account/security/totp/disable", form={"csrf_token": token, "password": PASSWORD, "code": "000000"}
    )
    assert bad.status_code == 400 and (await mfa.factor_status(runtime.db, world.user_id)).totp
    off = await client.post(
        "/account/security/totp/disable",
        form={
            "csrf_token": token,
            "password": PASSWORD,
            "code": pyotp.TOTP(secret.group(1)).at(clock.now),
            "end_other_sessions": "yes",
        },
    )
    assert off.status_code == 303 and off.headers["Location"].endswith("notice=totp-off")
    assert await rows(runtime, MfaCredential, world.user_id) == []
    assert await rows(runtime, RecoveryCode, world.user_id) == []
    # ASVS 7.4.3: the other browser was signed out; this one stays.
    assert await runtime.sessions.load(cookie_value(other_browser, SESSION_COOKIE)) is None
    assert await runtime.sessions.load(cookie_value(client, SESSION_COOKIE)) is not None
    recorded = await events(runtime, world.user_id)
    for name in ("mfa_enabled", "recovery_codes_regenerated", "mfa_disabled"):
        assert name in recorded
    assert (await outbox_subjects(runtime)).count("A security setting of your account changed") >= 3


async def test_security_forms_need_csrf(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    await login(client, world.email)
    for path in ("/account/security/totp", "/account/security/recovery-codes", "/account/security/totp/disable"):
        assert (await client.post(path, form={"password": PASSWORD})).status_code == 403
    assert await rows(runtime, MfaCredential, world.user_id) == []


async def test_recovery_codes_need_a_factor(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    await login(client, world.email)
    token = csrf_from(await text(await client.get("/account/security")))
    response = await client.post("/account/security/recovery-codes", form={"csrf_token": token, "password": PASSWORD})
    assert response.status_code == 400
    assert await rows(runtime, RecoveryCode, world.user_id) == []


# -- the account API -------------------------------------------------------------------------------


@pytest.fixture
async def api(client: Any, runtime: Any) -> tuple[World, str]:
    world = await api_world(runtime)
    return world, await token_for(client, world)


async def test_api_totp_lifecycle(client: Any, runtime: Any, api: tuple[World, str], clock: Clock) -> None:
    world, token = api
    status = await (await client.get("/api/account/mfa", headers=bearer(token))).get_json()
    assert status == {"totp": False, "recovery_codes_remaining": 0, "passkeys": [], "required": False}

    wrong = await client.post("/api/account/mfa/totp", json={"password": "nope"}, headers=bearer(token))
    assert wrong.status_code == 400 and (await wrong.get_json())["field"] == "password"
    extra = await client.post("/api/account/mfa/totp", json={"password": PASSWORD, "x": 1}, headers=bearer(token))
    assert extra.status_code == 400
    assert await rows(runtime, MfaCredential, world.user_id) == []

    started = await client.post("/api/account/mfa/totp", json={"password": PASSWORD}, headers=bearer(token))
    assert started.status_code == 201
    body = await started.get_json()
    assert body["otpauth_uri"].startswith("otpauth://totp/") and body["qr_code"].startswith("data:image/svg+xml")
    bad_code = await client.post(
        "/api/account/mfa/totp/confirm",
        json={"credential_id": body["credential_id"], "code": "000000"},
        headers=bearer(token),
    )
    assert bad_code.status_code == 400 and (await bad_code.get_json())["field"] == "code"
    confirmed = await client.post(
        "/api/account/mfa/totp/confirm",
        json={"credential_id": body["credential_id"], "code": pyotp.TOTP(body["secret"]).at(clock.now)},
        headers=bearer(token),
    )
    assert confirmed.status_code == 200 and len((await confirmed.get_json())["recovery_codes"]) == 10
    again = await client.post("/api/account/mfa/totp", json={"password": PASSWORD}, headers=bearer(token))
    assert again.status_code == 409

    regenerated = await client.post(
        "/api/account/mfa/recovery-codes", json={"password": PASSWORD}, headers=bearer(token)
    )
    assert len((await regenerated.get_json())["recovery_codes"]) == 10

    clock.advance()
    refused = await client.delete(
        "/api/account/mfa/totp", json={"password": PASSWORD, "code": "000000"}, headers=bearer(token)
    )
    assert refused.status_code == 400 and (await mfa.factor_status(runtime.db, world.user_id)).totp
    removed = await client.delete(
        "/api/account/mfa/totp",
        json={"password": PASSWORD, "code": pyotp.TOTP(body["secret"]).at(clock.now)},
        headers=bearer(token),
    )
    assert removed.status_code == 204
    assert not (await mfa.factor_status(runtime.db, world.user_id)).any


async def test_api_passkeys(client: Any, runtime: Any, api: tuple[World, str]) -> None:
    world, token = api
    started = await client.post("/api/account/passkeys/options", json={"password": PASSWORD}, headers=bearer(token))
    assert started.status_code == 200
    options = await started.get_json()
    credential = SoftAuthenticator().create(options["publicKey"], origin=ORIGIN)
    not_a_credential = await client.post(
        "/api/account/passkeys", json={"ceremony": options["ceremony"], "credential": "x"}, headers=bearer(token)
    )
    assert not_a_credential.status_code == 400
    added = await client.post(
        "/api/account/passkeys",
        json={"ceremony": options["ceremony"], "credential": credential, "name": "Phone"},
        headers=bearer(token),
    )
    assert added.status_code == 201, await text(added)
    key = await added.get_json()
    assert key["name"] == "Phone" and key["discoverable"] is True
    replay = await client.post(
        "/api/account/passkeys",
        json={"ceremony": options["ceremony"], "credential": credential, "name": "Again"},
        headers=bearer(token),
    )
    assert replay.status_code == 400

    listed = await (await client.get("/api/account/mfa", headers=bearer(token))).get_json()
    assert [item["id"] for item in listed["passkeys"]] == [key["id"]]
    renamed = await client.patch(
        f"/api/account/passkeys/{key['id']}", json={"name": "Old phone"}, headers=bearer(token)
    )
    assert (await renamed.get_json())["name"] == "Old phone"
    missing = await client.patch("/api/account/passkeys/nope", json={"name": "x"}, headers=bearer(token))
    assert missing.status_code == 404
    no_password = await client.delete(f"/api/account/passkeys/{key['id']}", json={}, headers=bearer(token))
    assert no_password.status_code == 400 and len(await rows(runtime, MfaCredential, world.user_id)) == 1
    deleted = await client.delete(
        f"/api/account/passkeys/{key['id']}", json={"password": PASSWORD}, headers=bearer(token)
    )
    assert deleted.status_code == 204
    assert await rows(runtime, MfaCredential, world.user_id) == []
    recorded = await events(runtime, world.user_id)
    for name in ("passkey_registered", "passkey_renamed", "passkey_removed"):
        assert name in recorded


async def test_api_needs_a_token(client: Any) -> None:
    response = await client.get("/api/account/mfa")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_status_after_enrolment(client: Any, runtime: Any, api: tuple[World, str], clock: Clock) -> None:
    world, token = api
    await enable_totp(runtime, world.user_id, clock)
    status = await (await client.get("/api/account/mfa", headers=bearer(token))).get_json()
    assert status["totp"] is True and status["recovery_codes_remaining"] == 10


async def test_a_passkey_beyond_the_limit_is_refused_with_the_limit_not_a_server_error(
    client: Any, runtime: Any, api: tuple[World, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At passkeys.MAX_PASSKEYS, starting to add another answers what finishing it would: the limit."""
    world, token = api
    monkeypatch.setattr(passkeys, "MAX_PASSKEYS", 1)
    await login(client, world.email)
    await add_passkey(client, SoftAuthenticator())

    on_the_page = await post_json(
        client,
        "/account/security/passkeys/options",
        {"password": PASSWORD},
        await page_token(client, "/account/security"),
    )
    assert on_the_page.status_code == 400
    refusal = await on_the_page.get_json()
    assert refusal["error"] == "passkey_failed"
    assert refusal["error_description"].startswith("An account can have at most")

    by_the_api = await client.post("/api/account/passkeys/options", json={"password": PASSWORD}, headers=bearer(token))
    assert by_the_api.status_code == 400
    body = await by_the_api.get_json()
    assert body["error"] == "invalid_request" and body["field"] == "passkey"
    assert len(await passkeys.list_passkeys(runtime.db, world.user_id)) == 1
