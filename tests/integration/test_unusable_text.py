"""Characters no handler can store or encode are bad input: 400 naming the field, nothing changed.

The 2026-12-01 security test's reproductions: on PostgreSQL a NUL byte in an email or client id
was a 500 before sign-in (M6: /login, /authorize, /logout, consent withdrawal), and a lone UTF-16
surrogate in JSON a 500 on nine account-API routes (L9). CI runs this file on SQLite and on
PostgreSQL (the 500s were PostgreSQL's). tests/integration/test_input_walk.py sends the same to
every route. Checklist: ASVS 2.2.1, 16.5.3.
"""

from __future__ import annotations

import html
from typing import Any

import pytest
from sqlalchemy import select

from idp.security.inputs import NUL, SURROGATE, first_unusable, unusable_character, unusable_in_json
from idp.storage.models import Consent, User
from tests.oauth_helpers import PASSWORD, code_flow, csrf_from, make_world


def test_the_rule() -> None:
    assert unusable_character("plain ASCII") is None
    assert unusable_character("Zoë, 東京, 🙂") is None
    assert unusable_character("a\x00b") == NUL
    assert unusable_character("a\ud800b") == SURROGATE
    assert unusable_character("\udfff") == SURROGATE
    assert first_unusable([("a", "1"), ("b", "x\x00")]) == ("b", NUL)
    assert first_unusable([("a\x00", "1")]) == ("a parameter name", NUL)
    assert unusable_in_json({"name": "ok", "credential": {"response": ["x", "\ud800"]}}) == (
        "credential.response[1]",
        SURROGATE,
    )
    assert unusable_in_json({"a\x00": 1}) == ("body", f"{NUL} in a member name")
    assert unusable_in_json({"ok": [1, 2.5, None, True]}) is None


async def page_text(response: Any) -> str:
    return html.unescape(await response.get_data(as_text=True))


async def test_nul_in_the_sign_in_email_is_refused(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    token = csrf_from(await (await client.get("/login")).get_data(as_text=True))
    response = await client.post("/login", form={"csrf_token": token, "email": "\x00", "password": PASSWORD})
    assert response.status_code == 400
    assert "The form field 'email' contains a NUL character" in await page_text(response)
    response = await client.post("/login", form={"csrf_token": token, "email": world.email + "\x00", "password": "x"})
    assert response.status_code == 400
    assert "idp_session" not in response.headers.get("Set-Cookie", "")


@pytest.mark.parametrize("path", ["/authorize", "/logout"])
async def test_nul_in_a_client_id_is_refused_without_redirecting(client: Any, runtime: Any, path: str) -> None:
    await make_world(runtime)
    response = await client.get(f"{path}?client_id=web%00app&response_type=code&redirect_uri=https://rp.example/cb")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "The query parameter 'client_id' contains a NUL character" in await page_text(response)


async def test_nul_in_a_withdrawn_client_id_is_refused_and_changes_nothing(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    await code_flow(client, world)
    token = csrf_from(await (await client.get("/account/apps")).get_data(as_text=True))
    response = await client.post("/account/apps/web%00app/withdraw", form={"csrf_token": token})
    assert response.status_code == 400
    assert "The path segment 'client_id' contains a NUL character" in await page_text(response)
    async with runtime.db.session() as session:
        assert len((await session.execute(select(Consent))).scalars().all()) == 1


# The nine account-API routes of L9, each with the member that carried the surrogate.
L9_ROUTES = [
    ("PATCH", "/api/account/profile", "name"),
    ("PATCH", "/api/account/profile", "given_name"),
    ("PATCH", "/api/account/profile", "preferred_username"),
    ("DELETE", "/api/account", "password"),
    ("POST", "/api/account/mfa/recovery-codes", "password"),
    ("POST", "/api/account/mfa/totp", "password"),
    ("POST", "/api/account/mfa/totp/confirm", "credential_id"),
    ("POST", "/api/account/passkeys/options", "password"),
    ("POST", "/api/account/sessions/end-others", "password"),
    ("DELETE", "/api/account/sessions/some-sid", "password"),
]


@pytest.mark.parametrize(("method", "path", "member"), L9_ROUTES)
@pytest.mark.parametrize("escape", ["\\ud800", "\\udc00", "\\u0000"])
async def test_a_lone_surrogate_or_nul_in_json_names_the_member(
    client: Any, runtime: Any, method: str, path: str, member: str, escape: str
) -> None:
    from sqlalchemy import update

    from idp.storage.models import OAuthClient

    world = await make_world(runtime)
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == world.web_id).values(first_party=True))
    token = (await code_flow(client, world))["access_token"]
    async with runtime.db.session() as session:
        before = (await session.get(User, world.user_id)).name  # type: ignore[union-attr]
    response = await client.open(
        path,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        data=f'{{"{member}": "x{escape}y"}}'.encode(),
    )
    assert response.status_code == 400
    body = await response.get_json()
    assert body["error"] == "invalid_request"
    assert body["field"] == member
    assert body["error_description"].startswith(f"{member}: contains a ")
    async with runtime.db.session() as session:
        user = await session.get(User, world.user_id)
        assert user is not None and user.name == before and user.disabled is False
