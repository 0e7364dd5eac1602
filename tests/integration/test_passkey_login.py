"""Passkeys through the web layer (a software authenticator stands in for the browser's): adding
one on the security page, using it as the second factor and for passwordless sign-in, with amr/acr
in the ID token for each path, and the refusals (no CSRF, wrong password, replay, wrong origin,
no user verification) changing nothing. The browser itself is in tests/e2e/test_passkeys_browser.py;
the ceremonies' own checks in test_passkeys.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from idp.accounts.security import passkeys
from idp.accounts.signin import authn
from idp.storage.models import AuditEvent, MfaCredential
from tests.mfa_helpers import ORIGIN, SESSION_COOKIE, outbox_subjects, text
from tests.oauth_helpers import (
    World,
    code_flow,
    cookie_value,
    csrf_from,
    jwt_parts,
    login,
    query_of,
)
from tests.webauthn_soft import SoftAuthenticator


async def page_token(client: Any, path: str) -> str:
    """The CSRF token a page gives its scripts (data-csrf on the passkey buttons)."""
    html = await text(await client.get(path))
    match = re.search(r'data-csrf="([0-9a-f]{64})"', html)
    assert match is not None, "no passkey button with a CSRF token on the page"
    return match.group(1)


async def post_json(client: Any, path: str, body: dict[str, Any], token: str | None) -> Any:
    headers = {"X-CSRF-Token": token} if token else {}
    return await client.post(path, json=body, headers=headers)


async def add_passkey(client: Any, authenticator: SoftAuthenticator, **create: Any) -> dict[str, Any]:
    """Through /account/security as a signed-in browser; returns the 201 body."""
    token = await page_token(client, "/account/security")
    started = await post_json(
        client, "/account/security/passkeys/options", {"password": "meadow-lantern-orbit-2048"}, token
    )
    assert started.status_code == 200, await text(started)
    options = await started.get_json()
    credential = authenticator.create(options["publicKey"], origin=ORIGIN, **create)
    done = await post_json(
        client,
        "/account/security/passkeys",
        {"ceremony": options["ceremony"], "credential": credential, "name": "Work laptop"},
        token,
    )
    assert done.status_code == 201, await text(done)
    return dict(await done.get_json())


async def stored(runtime: Any, user_id: str) -> list[MfaCredential]:
    async with runtime.db.session() as session:
        query = select(MfaCredential).where(MfaCredential.user_id == user_id, MfaCredential.type == passkeys.WEBAUTHN)
        return list((await session.execute(query)).scalars())


def passkey_answer(authenticator: SoftAuthenticator, **get: Any) -> Any:
    async def answer(client: Any) -> Any:
        token = await page_token(client, "/login/mfa")
        started = await post_json(client, "/login/mfa/passkey/options", {}, token)
        options = await started.get_json()
        assertion = authenticator.get(options["publicKey"], origin=ORIGIN, **get)
        response = await post_json(
            client, "/login/mfa/passkey", {"ceremony": options["ceremony"], "credential": assertion}, token
        )
        assert response.status_code == 200, await text(response)
        return await client.get((await response.get_json())["redirect"])

    return answer


async def passwordless(client: Any, authenticator: SoftAuthenticator, return_to: str, **get: Any) -> Any:
    token = await page_token(client, f"/login?return_to={return_to}")
    started = await post_json(client, "/login/passkey/options", {}, token)
    assert started.status_code == 200
    options = await started.get_json()
    assert options["publicKey"]["allowCredentials"] == [] and options["publicKey"]["userVerification"] == "required"
    assertion = authenticator.get(options["publicKey"], origin=ORIGIN, **get)
    return await post_json(
        client,
        "/login/passkey",
        {"ceremony": options["ceremony"], "credential": assertion, "return_to": return_to},
        token,
    )


# -- adding a passkey on the security page --------------------------------------------------------------


async def test_add_a_passkey_on_the_security_page(client: Any, runtime: Any, world: World) -> None:
    await login(client, world.email)
    created = await add_passkey(client, SoftAuthenticator())
    assert created["redirect"] == "/account/security?notice=passkey-added"
    page = await text(await client.get(created["redirect"]))
    assert "Work laptop" in page and 'id="security-notice"' in page
    [row] = await stored(runtime, world.user_id)
    assert row.id == created["id"] and row.confirmed_at is not None and row.sign_count == 0
    async with runtime.db.session() as session:
        events = [e.event for e in (await session.execute(select(AuditEvent))).scalars()]
    assert "passkey_registered" in events and "mfa_enabled" in events
    assert "A security setting of your account changed" in (await outbox_subjects(runtime))


async def test_adding_a_passkey_needs_the_password_and_csrf(client: Any, runtime: Any, world: World) -> None:
    await login(client, world.email)
    token = await page_token(client, "/account/security")
    wrong = await post_json(client, "/account/security/passkeys/options", {"password": "not-it"}, token)
    assert wrong.status_code == 400
    assert (await wrong.get_json())["error_description"] == "The password is not correct."
    no_csrf = await post_json(client, "/account/security/passkeys/options", {"password": "x"}, None)
    assert no_csrf.status_code == 403
    not_json = await client.post(
        "/account/security/passkeys/options", data="password=x", headers={"X-CSRF-Token": token}
    )
    assert not_json.status_code == 415
    assert await stored(runtime, world.user_id) == []


async def test_a_ceremony_of_another_session_is_refused(client: Any, app: Any, runtime: Any, world: World) -> None:
    await login(client, world.email)
    token = await page_token(client, "/account/security")
    started = await (
        await post_json(client, "/account/security/passkeys/options", {"password": "meadow-lantern-orbit-2048"}, token)
    ).get_json()
    credential = SoftAuthenticator().create(started["publicKey"], origin=ORIGIN)
    other = app.test_client()
    await login(other, world.email)
    other_token = await page_token(other, "/account/security")
    response = await post_json(
        other, "/account/security/passkeys", {"ceremony": started["ceremony"], "credential": credential}, other_token
    )
    assert response.status_code == 400
    assert await stored(runtime, world.user_id) == []


# -- second factor -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("backup_eligible", "kind"), [(False, "hwk"), (True, "swk")])
async def test_passkey_as_second_factor(
    client: Any, app: Any, runtime: Any, world: World, backup_eligible: bool, kind: str
) -> None:
    authenticator = SoftAuthenticator()
    await login(client, world.email)
    await add_passkey(client, authenticator, backup_eligible=backup_eligible)

    browser = app.test_client()
    response = await login(browser, world.email, return_to="/account")
    assert response.headers["Location"] == "/login/mfa"
    assert 'id="passkey-second-factor"' in await text(await browser.get("/login/mfa"))
    tokens = await code_flow(browser, world, second_factor=passkey_answer(authenticator))
    claims = jwt_parts(tokens["id_token"])[1]
    assert claims["amr"] == ["pwd", kind, "mfa"]
    assert claims["acr"] == authn.ACR_PHISHING_RESISTANT
    [row] = await stored(runtime, world.user_id)
    assert row.sign_count == 1 and row.last_used_at is not None


async def test_second_factor_passkey_refusals_change_nothing(client: Any, app: Any, runtime: Any, world: World) -> None:
    authenticator = SoftAuthenticator()
    await login(client, world.email)
    await add_passkey(client, authenticator)
    browser = app.test_client()
    await login(browser, world.email)
    token = await page_token(browser, "/login/mfa")
    options = await (await post_json(browser, "/login/mfa/passkey/options", {}, token)).get_json()

    wrong_origin = authenticator.get(options["publicKey"], origin="https://evil.example")
    response = await post_json(
        browser, "/login/mfa/passkey", {"ceremony": options["ceremony"], "credential": wrong_origin}, token
    )
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "passkey_failed"
    # The ceremony was spent by the failed attempt: a good assertion for it is refused too (single use).
    good = authenticator.get(options["publicKey"], origin=ORIGIN)
    replay = await post_json(
        browser, "/login/mfa/passkey", {"ceremony": options["ceremony"], "credential": good}, token
    )
    assert replay.status_code == 401
    assert cookie_value(browser, SESSION_COOKIE) is None
    async with runtime.db.session() as session:
        failures = (await session.execute(select(AuditEvent).where(AuditEvent.event == "login_failed"))).scalars().all()
    assert [f.details["factor"] for f in failures] == ["webauthn", "webauthn"]
    # Without a pending sign-in there is nothing to confirm.
    fresh = app.test_client()
    token = await page_token(fresh, "/login")
    assert (await post_json(fresh, "/login/mfa/passkey/options", {}, token)).status_code == 400


# -- passwordless --------------------------------------------------------------------------------------


async def test_passwordless_sign_in_through_an_authorization_request(
    client: Any, app: Any, runtime: Any, world: World
) -> None:
    from tests.oauth_helpers import WEB_REDIRECT, basic, pkce_pair

    authenticator = SoftAuthenticator()
    await login(client, world.email)
    await add_passkey(client, authenticator)

    browser = app.test_client()
    verifier, challenge = pkce_pair()
    query = (
        f"/authorize?response_type=code&client_id={world.web_id}&redirect_uri={WEB_REDIRECT}&scope=openid"
        f"&state=s&nonce=n&code_challenge={challenge}&code_challenge_method=S256"
    )
    parked = await browser.get(query)
    return_to = query_of(parked.headers["Location"])["return_to"]
    response = await passwordless(browser, authenticator, return_to)
    assert response.status_code == 200, await text(response)
    assert (await response.get_json())["redirect"] == return_to
    session = await runtime.sessions.load(cookie_value(browser, SESSION_COOKIE))
    assert session is not None and session.user_id == world.user_id and session.amr == ["hwk", "mfa"]

    consent = await browser.get(return_to)
    consent_path = consent.headers["Location"]
    page = await browser.get(consent_path)
    done = await browser.post(consent_path, form={"csrf_token": csrf_from(await text(page)), "decision": "allow"})
    code = query_of(done.headers["Location"])["code"]
    tokens = await browser.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": WEB_REDIRECT,
            "code_verifier": verifier,
        },
        headers=basic(world.web_id, world.web_secret),
    )
    claims = jwt_parts((await tokens.get_json())["id_token"])[1]
    assert claims["amr"] == ["hwk", "mfa"]
    assert claims["acr"] == authn.ACR_PHISHING_RESISTANT


async def test_passwordless_refusals(client: Any, app: Any, runtime: Any, world: World) -> None:
    authenticator = SoftAuthenticator()
    await login(client, world.email)
    await add_passkey(client, authenticator)

    browser = app.test_client()
    unverified = await passwordless(browser, authenticator, "/account", user_verified=False)
    assert unverified.status_code == 401
    assert cookie_value(browser, SESSION_COOKIE) is None
    # A passkey that was created but never registered here is unknown.
    token = await page_token(client, "/account/security")
    started = await (
        await post_json(client, "/account/security/passkeys/options", {"password": "meadow-lantern-orbit-2048"}, token)
    ).get_json()
    stranger = SoftAuthenticator()
    stranger.create(started["publicKey"], origin=ORIGIN)
    unknown = await passwordless(browser, stranger, "/account")
    assert unknown.status_code == 401
    assert cookie_value(browser, SESSION_COOKIE) is None
    # No CSRF header: refused before any ceremony starts.
    assert (await post_json(browser, "/login/passkey/options", {}, None)).status_code == 403
    # A ceremony started in another browser can't be finished in this one.
    token = await page_token(browser, "/login")
    options = await (await post_json(browser, "/login/passkey/options", {}, token)).get_json()
    assertion = authenticator.get(options["publicKey"], origin=ORIGIN)
    elsewhere = app.test_client()
    elsewhere_token = await page_token(elsewhere, "/login")
    moved = await post_json(
        elsewhere, "/login/passkey", {"ceremony": options["ceremony"], "credential": assertion}, elsewhere_token
    )
    assert moved.status_code == 401
    assert cookie_value(elsewhere, SESSION_COOKIE) is None
    # The open redirect check applies here too.
    ok = await passwordless(app.test_client(), authenticator, "https://evil.example/")
    assert (await ok.get_json())["redirect"] == "/account"


# -- removing ----------------------------------------------------------------------------------------


async def test_remove_a_passkey_needs_the_password(client: Any, runtime: Any, world: World) -> None:
    await login(client, world.email)
    created = await add_passkey(client, SoftAuthenticator())
    token = await page_token(client, "/account/security")
    path = f"/account/security/passkeys/{created['id']}/remove"
    wrong = await client.post(path, form={"csrf_token": token, "password": "nope"})
    assert wrong.status_code == 400 and len(await stored(runtime, world.user_id)) == 1
    done = await client.post(path, form={"csrf_token": token, "password": "meadow-lantern-orbit-2048"})
    assert done.status_code == 303 and done.headers["Location"].endswith("notice=passkey-removed")
    assert await stored(runtime, world.user_id) == []
    gone = await client.post(path, form={"csrf_token": token, "password": "meadow-lantern-orbit-2048"})
    assert gone.status_code == 404


async def test_rename_a_passkey(client: Any, runtime: Any, world: World) -> None:
    await login(client, world.email)
    created = await add_passkey(client, SoftAuthenticator())
    token = await page_token(client, "/account/security")
    path = f"/account/security/passkeys/{created['id']}/rename"
    assert (await client.post(path, form={"csrf_token": token, "name": "\x00"})).status_code == 400
    done = await client.post(path, form={"csrf_token": token, "name": "Blue key"})
    assert done.status_code == 303
    [row] = await stored(runtime, world.user_id)
    assert row.name == "Blue key"
