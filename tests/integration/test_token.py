"""The token endpoint: authorization code, refresh token and client credentials grants.

Each test asserts the exact ``error`` code and status (RFC 6749 §5.2) and the storage side effect:
the code consumed, the refresh token rotated or revoked, the access token denied at /userinfo.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import delete, select, update

from idp.oauth.client_auth import ASSERTION_TYPE
from idp.oauth.clients import ClientSpec
from idp.security.tokens import sha256_digest
from idp.storage.models import AuthorizationCode, OAuthClient, RefreshToken, User, utcnow
from tests.oauth_helpers import (
    WEB_REDIRECT,
    World,
    add_client,
    authorize,
    basic,
    code_flow,
    jwt_parts,
    make_world,
    query_of,
)

# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
async def world(runtime: Any) -> World:
    return await make_world(runtime)


async def post_token(client: Any, form: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return await client.post("/token", form=form, headers=headers or {})


async def web_token(client: Any, world: World, form: dict[str, str]) -> Any:
    return await post_token(client, form, basic(world.web_id, world.web_secret))


async def assert_token_error(response: Any, error: str, status: int = 400) -> dict[str, Any]:
    body = await response.get_json()
    assert response.status_code == status, body
    assert body["error"] == error, body
    assert response.headers["Cache-Control"] == "no-store"
    assert "access_token" not in body
    return dict(body)


async def userinfo_status(client: Any, access_token: str) -> int:
    response = await client.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return int(response.status_code)


async def web_code(client: Any, world: World, **params: str | None) -> tuple[str, str | None]:
    """A fresh authorization code for the web client (signing in and consenting as needed)."""
    response, verifier = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email, **params)
    assert response.status_code == 303, await response.get_data(as_text=True)
    return query_of(response.headers["Location"])["code"], verifier


def code_form(code: str, verifier: str | None, redirect_uri: str | None = WEB_REDIRECT) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": code}
    if redirect_uri is not None:
        form["redirect_uri"] = redirect_uri
    if verifier is not None:
        form["code_verifier"] = verifier
    return form


async def refresh_row(runtime: Any, refresh_token: str) -> RefreshToken:
    jti = jwt_parts(refresh_token)[1]["jti"]
    async with runtime.db.session() as session:
        row = await session.get(RefreshToken, jti)
    assert row is not None
    return row


async def code_row(runtime: Any, code: str) -> AuthorizationCode:
    async with runtime.db.session() as session:
        row = await session.get(AuthorizationCode, sha256_digest(code))
    assert row is not None
    return row


def refresh_form(refresh_token: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}


def half_hash(value: str, digest: Any) -> str:
    raw = digest(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw[: len(raw) // 2]).rstrip(b"=").decode()


# -- authorization code: single use, bound to client, redirect URI and PKCE -----------------------


async def test_code_replay_is_refused_and_revokes_what_the_code_gave(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §4.1.2 / §10.5, ASVS 10.4.2, OIDCCAuthCodeReuse: the second use is invalid_grant and
    the tokens of the first are revoked."""
    tokens = await code_flow(client, world)
    assert await userinfo_status(client, tokens["access_token"]) == 200
    form = code_form(tokens["_authorization"]["code"], tokens["_verifier"])

    replay = await web_token(client, world, form)
    await assert_token_error(replay, "invalid_grant")

    assert await userinfo_status(client, tokens["access_token"]) == 401
    row = await refresh_row(runtime, tokens["refresh_token"])
    assert row.revoked_at is not None
    await assert_token_error(await web_token(client, world, refresh_form(tokens["refresh_token"])), "invalid_grant")
    assert (await code_row(runtime, form["code"])).consumed_at is not None


async def test_concurrent_redemptions_of_one_code_yield_one_token_response(
    client: Any, world: World, runtime: Any
) -> None:
    """ASVS 10.4.2: the code is consumed atomically; the loser of the race is a replay, so the
    winner's tokens are revoked as well."""
    code, verifier = await web_code(client, world)
    form = code_form(code, verifier)
    responses = await asyncio.gather(*(web_token(client, world, form) for _ in range(3)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 400, 400]
    for response in responses:
        body = await response.get_json()
        if response.status_code == 400:
            assert body["error"] == "invalid_grant"
        else:
            winner = body
    assert await userinfo_status(client, winner["access_token"]) == 401
    assert (await refresh_row(runtime, winner["refresh_token"])).revoked_at is not None


async def test_code_issued_to_another_client_is_refused(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §4.1.3: the code must have been issued to the authenticated client."""
    code, verifier = await web_code(client, world)
    form = code_form(code, verifier) | {"client_id": world.spa_id}
    await assert_token_error(await post_token(client, form), "invalid_grant")
    other_id, other_secret = await add_client(
        runtime, ClientSpec(name="Other", client_type="confidential", redirect_uris=[WEB_REDIRECT])
    )
    assert other_secret is not None
    response = await post_token(client, code_form(code, verifier), basic(other_id, other_secret))
    await assert_token_error(response, "invalid_grant")
    # The rightful client can still redeem it.
    assert (await code_row(runtime, code)).consumed_at is None
    assert (await web_token(client, world, code_form(code, verifier))).status_code == 200


async def test_wrong_redirect_uri_is_refused(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §4.1.3: redirect_uri must be identical to the authorization request's."""
    code, verifier = await web_code(client, world)
    response = await web_token(client, world, code_form(code, verifier, "https://rp.example/other"))
    await assert_token_error(response, "invalid_grant")
    assert (await code_row(runtime, code)).consumed_at is None


async def test_missing_redirect_uri_is_refused_when_the_authorization_request_had_it(
    client: Any, world: World, runtime: Any
) -> None:
    """L3, RFC 6749 §4.1.3: redirect_uri is REQUIRED if it was included in the authorization
    request, even with a single registered URI. The code stays unused for the rightful request."""
    code, verifier = await web_code(client, world)
    assert (await code_row(runtime, code)).redirect_uri_in_request is True
    response = await web_token(client, world, code_form(code, verifier, None))
    body = await assert_token_error(response, "invalid_request")
    assert "redirect_uri" in body["error_description"]
    assert (await code_row(runtime, code)).consumed_at is None
    assert (await web_token(client, world, code_form(code, verifier))).status_code == 200


async def test_missing_redirect_uri_is_accepted_when_the_authorization_request_omitted_it(
    client: Any, world: World, runtime: Any
) -> None:
    """RFC 6749 §4.1.3: not required when the (plain OAuth) authorization request left it out with
    one registered URI (§3.1.2.3); if sent anyway it must still be that URI."""
    response, verifier = await authorize(client, world.web_id, None, email=world.email, scope="profile")
    code = query_of(response.headers["Location"])["code"]
    assert (await code_row(runtime, code)).redirect_uri_in_request is False
    wrong = await web_token(client, world, code_form(code, verifier, "https://rp.example/other"))
    await assert_token_error(wrong, "invalid_grant")
    assert (await code_row(runtime, code)).consumed_at is None
    response = await web_token(client, world, code_form(code, verifier, None))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await code_row(runtime, code)).consumed_at is not None
    assert "id_token" not in await response.get_json()


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param(None, id="missing"),
        pytest.param("w" * 64, id="wrong"),
        pytest.param("s" * 42, id="too-short"),
        pytest.param("l" * 129, id="too-long"),
        pytest.param("+" * 43, id="bad-characters"),
    ],
)
async def test_pkce_verifier_must_match(client: Any, world: World, runtime: Any, verifier: str | None) -> None:
    """RFC 7636 §4.6, ASVS 10.4.6."""
    code, _ = await web_code(client, world)
    await assert_token_error(await web_token(client, world, code_form(code, verifier)), "invalid_grant")
    assert (await code_row(runtime, code)).consumed_at is None


async def test_verifier_without_a_challenge_is_refused(client: Any, world: World, runtime: Any) -> None:
    """RFC 9700 §4.8.2: a code_verifier for a code issued without code_challenge is a downgrade."""
    client_id, secret = await add_client(
        runtime, ClientSpec(name="Legacy", client_type="confidential", redirect_uris=[WEB_REDIRECT])
    )
    assert secret is not None
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == client_id).values(require_pkce=False))

    async def legacy_code() -> str:
        response, _ = await authorize(
            client,
            client_id,
            WEB_REDIRECT,
            email=world.email,
            code_challenge=None,
            code_challenge_method=None,
        )
        return query_of(response.headers["Location"])["code"]

    code = await legacy_code()
    assert (await code_row(runtime, code)).code_challenge is None
    response = await post_token(client, code_form(code, "v" * 50), basic(client_id, secret))
    await assert_token_error(response, "invalid_grant")
    # Without the verifier the same client is served (so the refusal above is about the verifier).
    response = await post_token(client, code_form(await legacy_code(), None), basic(client_id, secret))
    assert response.status_code == 200


async def test_expired_code_is_refused(client: Any, world: World, runtime: Any) -> None:
    code, verifier = await web_code(client, world)
    async with runtime.db.session() as session:
        await session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.code_digest == sha256_digest(code))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    await assert_token_error(await web_token(client, world, code_form(code, verifier)), "invalid_grant")
    assert (await code_row(runtime, code)).consumed_at is None


async def test_code_lifetime_is_at_most_ten_minutes(client: Any, world: World, runtime: Any) -> None:
    """ASVS 10.4.3 (RFC 6749 §4.1.2: a maximum lifetime of 10 minutes is RECOMMENDED)."""
    assert runtime.settings.tokens.authorization_code_ttl <= 600
    code, _ = await web_code(client, world)
    row = await code_row(runtime, code)
    assert timedelta(0) < row.expires_at - row.created_at <= timedelta(seconds=600)


async def test_unknown_code_is_refused(client: Any, world: World) -> None:
    response = await web_token(client, world, code_form("no-such-code", "v" * 50))
    await assert_token_error(response, "invalid_grant")


async def test_the_code_of_a_disabled_user_is_spent_and_yields_nothing(client: Any, world: World, runtime: Any) -> None:
    """The user is checked in the statement that spends the code: a disabled account's code
    yields no tokens, and is spent (presenting it again is a replay)."""
    code, verifier = await web_code(client, world)
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(disabled=True))
    response = await web_token(client, world, code_form(code, verifier))
    await assert_token_error(response, "invalid_grant")
    assert (await response.get_json())["error_description"] == "The user of this grant no longer exists or is disabled."
    assert (await code_row(runtime, code)).consumed_at is not None
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(disabled=False))
        assert (await session.execute(select(RefreshToken).where(RefreshToken.user_id == world.user_id))).all() == []
    again = await web_token(client, world, code_form(code, verifier))
    assert (await again.get_json())["error_description"] == "The authorization code has already been used."


# -- refresh tokens --------------------------------------------------------------------------------


async def test_refresh_rotates_the_token(client: Any, world: World, runtime: Any) -> None:
    """RFC 9700 §4.14.2: rotation; the used token is marked and a new one (same family) returned."""
    tokens = await code_flow(client, world)
    response = await web_token(client, world, refresh_form(tokens["refresh_token"]))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    rotated = await response.get_json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert rotated["scope"] == tokens["scope"]
    old = await refresh_row(runtime, tokens["refresh_token"])
    new = await refresh_row(runtime, rotated["refresh_token"])
    assert old.used_at is not None and old.revoked_at is None
    assert new.used_at is None and new.parent_jti == old.jti and new.family_id == old.family_id
    assert await userinfo_status(client, rotated["access_token"]) == 200
    # OIDC Core §12.2: the new ID token keeps sub and the original auth_time.
    first_id, new_id = jwt_parts(tokens["id_token"])[1], jwt_parts(rotated["id_token"])[1]
    assert new_id["sub"] == first_id["sub"] and new_id["auth_time"] == first_id["auth_time"]


async def test_reusing_a_rotated_refresh_token_revokes_the_family(client: Any, world: World, runtime: Any) -> None:
    """RFC 9700 §4.14.2, ASVS 10.4.5: reuse of an invalidated refresh token revokes every token of
    that authorization, the newest included, and the access tokens issued from it."""
    tokens = await code_flow(client, world)
    rotated = await (await web_token(client, world, refresh_form(tokens["refresh_token"]))).get_json()
    assert await userinfo_status(client, rotated["access_token"]) == 200

    reuse = await web_token(client, world, refresh_form(tokens["refresh_token"]))
    await assert_token_error(reuse, "invalid_grant")

    family = jwt_parts(tokens["refresh_token"])[1]["jti"]
    async with runtime.db.session() as session:
        first_row = await session.get(RefreshToken, family)
        assert first_row is not None
        family_id = first_row.family_id
        rows = (await session.execute(select(RefreshToken).where(RefreshToken.family_id == family_id))).scalars()
        assert all(row.revoked_at is not None for row in rows)
    await assert_token_error(await web_token(client, world, refresh_form(rotated["refresh_token"])), "invalid_grant")
    assert await userinfo_status(client, rotated["access_token"]) == 401
    assert await userinfo_status(client, tokens["access_token"]) == 401


async def test_concurrent_uses_of_one_refresh_token_revoke_the_family(client: Any, world: World, runtime: Any) -> None:
    """RFC 9700 §4.14.2: rotation is atomic; the concurrent loser is a reuse, so even the token the
    winner just received is revoked (no window between rotating and storing the new token)."""
    tokens = await code_flow(client, world)
    form = refresh_form(tokens["refresh_token"])
    responses = await asyncio.gather(*(web_token(client, world, form) for _ in range(3)))
    assert sorted(response.status_code for response in responses) == [200, 400, 400]
    bodies = {response.status_code: await response.get_json() for response in responses}
    assert bodies[400]["error"] == "invalid_grant"
    winner = bodies[200]
    assert (await refresh_row(runtime, winner["refresh_token"])).revoked_at is not None
    assert await userinfo_status(client, winner["access_token"]) == 401


async def test_refresh_by_another_client_is_refused(client: Any, world: World, runtime: Any) -> None:
    """OIDCCRefreshToken: the refresh token is bound to its client (RFC 6749 §6)."""
    tokens = await code_flow(client, world)
    other_id, other_secret = await add_client(
        runtime, ClientSpec(name="Other", client_type="confidential", redirect_uris=[WEB_REDIRECT])
    )
    assert other_secret is not None
    response = await post_token(client, refresh_form(tokens["refresh_token"]), basic(other_id, other_secret))
    await assert_token_error(response, "invalid_grant")
    row = await refresh_row(runtime, tokens["refresh_token"])
    assert row.used_at is None and row.revoked_at is None


async def test_refresh_can_narrow_the_scope_but_not_widen_it(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §6: a narrower access token on request; the new refresh token keeps the original
    scope ("MUST be identical"); a wider scope is invalid_scope."""
    tokens = await code_flow(client, world, scope="openid profile offline_access")
    wider = await web_token(client, world, refresh_form(tokens["refresh_token"], scope="openid profile email"))
    await assert_token_error(wider, "invalid_scope")
    assert (await refresh_row(runtime, tokens["refresh_token"])).used_at is None

    narrow = await web_token(client, world, refresh_form(tokens["refresh_token"], scope="openid"))
    assert narrow.status_code == 200
    narrowed = await narrow.get_json()
    assert narrowed["scope"] == "openid"
    assert jwt_parts(narrowed["access_token"])[1]["scope"] == "openid"
    assert jwt_parts(narrowed["refresh_token"])[1]["scope"] == "openid profile offline_access"
    assert (await refresh_row(runtime, narrowed["refresh_token"])).scope == "openid profile offline_access"

    # The original scope is still available from the rotated refresh token.
    again = await web_token(client, world, refresh_form(narrowed["refresh_token"], scope="openid profile"))
    assert again.status_code == 200, await again.get_data(as_text=True)
    assert (await again.get_json())["scope"] == "openid profile"


@pytest.mark.parametrize("column", ["expires_at", "family_expires_at"])
async def test_expired_refresh_token_is_refused(client: Any, world: World, runtime: Any, column: str) -> None:
    """ASVS 10.4.8: idle and absolute expiry."""
    tokens = await code_flow(client, world)
    jti = jwt_parts(tokens["refresh_token"])[1]["jti"]
    async with runtime.db.session() as session:
        await session.execute(
            update(RefreshToken).where(RefreshToken.jti == jti).values({column: utcnow() - timedelta(seconds=1)})
        )
    await assert_token_error(await web_token(client, world, refresh_form(tokens["refresh_token"])), "invalid_grant")
    assert (await refresh_row(runtime, tokens["refresh_token"])).used_at is None


@pytest.mark.parametrize("disabled", [True, False], ids=["disabled", "deleted"])
async def test_the_refresh_token_of_an_inactive_user_is_spent_and_yields_nothing(
    client: Any, world: World, runtime: Any, disabled: bool
) -> None:
    """A disabled or deleted account gets no tokens from an earlier grant; the token presented is
    spent (presenting it again is a reuse)."""
    tokens = await code_flow(client, world)
    if disabled:
        async with runtime.db.session() as session:
            await session.execute(update(User).where(User.id == world.user_id).values(disabled=True))
        response = await web_token(client, world, refresh_form(tokens["refresh_token"]))
        await assert_token_error(response, "invalid_grant")
        assert (await response.get_json())["error_description"] == (
            "The user of this grant no longer exists or is disabled."
        )
        assert (await refresh_row(runtime, tokens["refresh_token"])).used_at is not None
        async with runtime.db.session() as session:
            await session.execute(update(User).where(User.id == world.user_id).values(disabled=False))
        again = await web_token(client, world, refresh_form(tokens["refresh_token"]))
        assert "already been used" in (await again.get_json())["error_description"]
    else:
        async with runtime.db.session() as session:
            # The account's rows go with it (ON DELETE CASCADE): nothing is left to rotate.
            await session.execute(delete(User).where(User.id == world.user_id))
        response = await web_token(client, world, refresh_form(tokens["refresh_token"]))
        await assert_token_error(response, "invalid_grant")


async def test_a_refresh_token_with_a_known_jti_and_another_digest_is_refused(
    client: Any, world: World, runtime: Any
) -> None:
    """The row is found by the token's jti, and spent only if the whole token's digest matches."""
    tokens = await code_flow(client, world)
    jti = jwt_parts(tokens["refresh_token"])[1]["jti"]
    async with runtime.db.session() as session:
        await session.execute(update(RefreshToken).where(RefreshToken.jti == jti).values(token_digest="0" * 64))
    response = await web_token(client, world, refresh_form(tokens["refresh_token"]))
    await assert_token_error(response, "invalid_grant")
    assert (await response.get_json())["error_description"] == "The refresh token is invalid."
    assert (await refresh_row(runtime, tokens["refresh_token"])).used_at is None


async def test_refresh_token_is_not_an_access_token_and_vice_versa(client: Any, world: World, runtime: Any) -> None:
    """ASVS 9.2.2 / RFC 8725 §3.11: explicit ``typ`` keeps the token kinds apart."""
    tokens = await code_flow(client, world)
    header, claims = jwt_parts(tokens["refresh_token"])
    assert header["typ"] == "rt+jwt"
    assert claims["client_id"] == world.web_id

    response = await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    for not_a_refresh_token in (tokens["access_token"], tokens["id_token"]):
        response = await web_token(client, world, refresh_form(not_a_refresh_token))
        await assert_token_error(response, "invalid_grant")
    assert (await refresh_row(runtime, tokens["refresh_token"])).used_at is None


# -- client authentication and request checks ------------------------------------------------------


async def test_wrong_secret_is_invalid_client_with_a_challenge(client: Any, world: World) -> None:
    """RFC 6749 §5.2: 401 and WWW-Authenticate when the client authenticated with a header."""
    code, verifier = await web_code(client, world)
    response = await post_token(client, code_form(code, verifier), basic(world.web_id, "not-the-secret"))
    await assert_token_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_public_client_sending_a_secret_is_invalid_client(client: Any, world: World) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": "x", "client_id": world.spa_id, "client_secret": "s" * 20}
    response = await post_token(client, form)
    await assert_token_error(response, "invalid_client", 401)
    assert "WWW-Authenticate" in response.headers


async def test_grant_not_allowed_for_the_client_is_unauthorized_client(client: Any, world: World) -> None:
    response = await post_token(client, {"grant_type": "client_credentials", "client_id": world.spa_id})
    await assert_token_error(response, "unauthorized_client")


async def test_unknown_grant_type_is_unsupported_grant_type(client: Any, world: World) -> None:
    """RFC 9700 §2.4: the password grant (and anything unknown) is not supported."""
    for grant_type in ("password", "urn:ietf:params:oauth:grant-type:device_code", "implicit"):
        response = await web_token(client, world, {"grant_type": grant_type, "username": "a", "password": "b"})
        await assert_token_error(response, "unsupported_grant_type")


async def test_missing_grant_type_is_invalid_request(client: Any, world: World) -> None:
    await assert_token_error(await web_token(client, world, {"code": "x"}), "invalid_request")


async def test_json_body_is_invalid_request(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §3.2: the token request is application/x-www-form-urlencoded."""
    code, verifier = await web_code(client, world)
    response = await client.post(
        "/token", json=code_form(code, verifier), headers=basic(world.web_id, world.web_secret)
    )
    await assert_token_error(response, "invalid_request")
    assert (await code_row(runtime, code)).consumed_at is None


async def test_repeated_token_parameter_is_invalid_request(client: Any, world: World) -> None:
    """RFC 6749 §3.2: parameters must not be included more than once."""
    code, verifier = await web_code(client, world)
    body = f"grant_type=authorization_code&code={code}&code={code}&code_verifier={verifier}"
    response = await client.post(
        "/token",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **basic(world.web_id, world.web_secret)},
    )
    await assert_token_error(response, "invalid_request")


async def test_client_secret_post_client_works(client: Any, world: World, runtime: Any) -> None:
    """OIDCCServerTestClientSecretPost."""
    client_id, secret = await add_client(
        runtime,
        ClientSpec(
            name="Post",
            client_type="confidential",
            redirect_uris=[WEB_REDIRECT],
            token_endpoint_auth_method="client_secret_post",
        ),
    )
    assert secret is not None
    response, verifier = await authorize(client, client_id, WEB_REDIRECT, email=world.email)
    code = query_of(response.headers["Location"])["code"]
    form = code_form(code, verifier) | {"client_id": client_id, "client_secret": secret}
    token = await post_token(client, form)
    assert token.status_code == 200, await token.get_data(as_text=True)
    assert jwt_parts((await token.get_json())["id_token"])[1]["aud"] == client_id


async def test_private_key_jwt_works_once_per_assertion(client: Any, world: World, runtime: Any) -> None:
    """OIDC Core §9 / RFC 7523 §3: a valid assertion authenticates; its jti can't be replayed."""
    key = ECKey.generate_key("P-256", parameters={"kid": "client-key-1", "use": "sig"})
    client_id, _ = await add_client(
        runtime,
        ClientSpec(
            name="Key client",
            client_type="confidential",
            redirect_uris=[WEB_REDIRECT],
            token_endpoint_auth_method="private_key_jwt",
            jwks={"keys": [key.as_dict(private=False)]},
        ),
    )
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": runtime.settings.issuer + "/token",
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode({"alg": "ES256", "kid": "client-key-1"}, claims, key, algorithms=["ES256"])
    credentials = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}

    response, verifier = await authorize(client, client_id, WEB_REDIRECT, email=world.email)
    code = query_of(response.headers["Location"])["code"]
    token = await post_token(client, code_form(code, verifier) | credentials)
    assert token.status_code == 200, await token.get_data(as_text=True)
    refresh_token = (await token.get_json())["refresh_token"]

    replay = await post_token(client, refresh_form(refresh_token) | credentials)
    await assert_token_error(replay, "invalid_client", 401)
    assert (await refresh_row(runtime, refresh_token)).used_at is None


# -- client credentials ----------------------------------------------------------------------------


async def test_client_credentials_issues_only_an_access_token_for_the_client(client: Any, runtime: Any) -> None:
    """RFC 6749 §4.4.3 (no refresh token), RFC 9068 §2.2 (``sub`` is the client when no user)."""
    client_id, secret = await add_client(
        runtime,
        ClientSpec(name="Service", client_type="confidential", grant_types=["client_credentials"], scopes=["api.read"]),
    )
    assert secret is not None
    response = await post_token(client, {"grant_type": "client_credentials"}, basic(client_id, secret))
    assert response.status_code == 200, await response.get_data(as_text=True)
    body = await response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["scope"] == "api.read"
    header, claims = jwt_parts(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == client_id
    async with runtime.db.session() as session:
        assert (await session.execute(select(RefreshToken))).first() is None

    for scope in ("openid", "api.read openid", "api.write"):
        refused = await post_token(
            client, {"grant_type": "client_credentials", "scope": scope}, basic(client_id, secret)
        )
        await assert_token_error(refused, "invalid_scope")


# -- what the tokens contain -----------------------------------------------------------------------


async def test_token_response_and_access_token_claims(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §5.1 (no caching), RFC 9068 §2.1-2.2 (``at+jwt`` and its claims)."""
    code, verifier = await web_code(client, world)
    response = await web_token(client, world, code_form(code, verifier))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = await response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == runtime.settings.tokens.access_token_ttl
    header, claims = jwt_parts(body["access_token"])
    assert header["typ"] == "at+jwt" and header["kid"]
    assert {"iss", "sub", "aud", "client_id", "exp", "iat", "jti", "scope"} <= set(claims)
    assert claims["iss"] == runtime.settings.issuer
    assert claims["sub"] == world.user_id
    assert claims["client_id"] == world.web_id
    assert claims["scope"] == body["scope"] == "openid profile email offline_access"
    assert claims["exp"] - claims["iat"] == runtime.settings.tokens.access_token_ttl


async def test_id_token_claims(client: Any, world: World, runtime: Any) -> None:
    """OIDC Core §2 and §3.1.3.6 (at_hash: left half of SHA-256 of the access token for RS256)."""
    tokens = await code_flow(client, world)
    header, claims = jwt_parts(tokens["id_token"])
    assert header["alg"] == "RS256"
    assert {"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "amr"} <= set(claims)
    assert claims["iss"] == runtime.settings.issuer
    assert claims["sub"] == world.user_id
    assert claims["aud"] == world.web_id
    assert claims["nonce"] == "n-456"
    assert claims["amr"] == ["pwd"]
    assert claims["at_hash"] == half_hash(tokens["access_token"], hashlib.sha256)
    assert claims["iat"] - 60 <= claims["auth_time"] <= claims["iat"] < claims["exp"]
    session = await runtime.sessions.by_sid(claims["sid"])
    assert session is not None and session.user_id == world.user_id


@pytest.mark.parametrize(("alg", "digest"), [("ES256", hashlib.sha256), ("Ed25519", hashlib.sha512)])
async def test_id_token_uses_the_clients_algorithm_and_verifies_with_the_jwks(
    client: Any, world: World, runtime: Any, alg: str, digest: Any
) -> None:
    """OIDC Registration §2 id_token_signed_response_alg; OIDC Core §10.1 (keys from jwks_uri)."""
    client_id, secret = await add_client(
        runtime,
        ClientSpec(
            name=f"{alg} client",
            client_type="confidential",
            redirect_uris=[WEB_REDIRECT],
            id_token_signed_response_alg=alg,
        ),
    )
    assert secret is not None
    response, verifier = await authorize(client, client_id, WEB_REDIRECT, email=world.email)
    code = query_of(response.headers["Location"])["code"]
    token = await post_token(client, code_form(code, verifier), basic(client_id, secret))
    body = await token.get_json()

    header, _ = jwt_parts(body["id_token"])
    assert header["alg"] == alg
    jwks = await (await client.get("/jwks")).get_json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    verified = jwt.decode(body["id_token"], KeySet.import_key_set(jwks), algorithms=[alg])
    assert verified.claims["aud"] == client_id
    assert verified.claims["at_hash"] == half_hash(body["access_token"], digest)


async def test_pairwise_client_tokens_do_not_carry_the_user_id(client: Any, world: World, runtime: Any) -> None:
    """OIDC Core §8.1: a pairwise client sees one stable subject in every token it can read,
    refresh tokens (rotated ones too) included, and never the local user id."""
    redirect_uri = "https://pairwise.example/cb"
    client_id, secret = await add_client(
        runtime,
        ClientSpec(name="Pairwise", client_type="confidential", redirect_uris=[redirect_uri], subject_type="pairwise"),
    )
    assert secret is not None
    response, verifier = await authorize(client, client_id, redirect_uri, email=world.email)
    code = query_of(response.headers["Location"])["code"]
    exchanged = await post_token(client, code_form(code, verifier, redirect_uri), basic(client_id, secret))
    tokens = await exchanged.get_json()
    refreshed = await post_token(client, refresh_form(tokens["refresh_token"]), basic(client_id, secret))
    assert refreshed.status_code == 200
    subject = jwt_parts(tokens["id_token"])[1]["sub"]
    assert subject != world.user_id
    for body in (tokens, await refreshed.get_json()):
        for name in ("access_token", "id_token", "refresh_token"):
            claims = jwt_parts(body[name])[1]
            assert claims["sub"] == subject, name
            assert world.user_id not in str(claims), name
    assert (await refresh_row(runtime, tokens["refresh_token"])).user_id == world.user_id


# -- tokens we did not sign ------------------------------------------------------------------------


def forged(claims: dict[str, Any], typ: str, kid: str, key: Any) -> str:
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": typ}, claims, key, algorithms=["RS256"])


async def test_tokens_signed_by_a_key_outside_our_jwks_are_refused(client: Any, world: World, runtime: Any) -> None:
    """ASVS 9.1.3: only keys from our own JWKS verify our tokens (unknown kid, or our kid with
    another key)."""
    tokens = await code_flow(client, world)
    foreign = RSAKey.generate_key(2048)
    own_kid = jwt_parts(tokens["access_token"])[0]["kid"]
    access_claims = jwt_parts(tokens["access_token"])[1] | {"jti": "forged-at"}
    refresh_claims = jwt_parts(tokens["refresh_token"])[1]
    for kid in ("unknown-kid", own_kid):
        response = await client.get(
            "/userinfo", headers={"Authorization": f"Bearer {forged(access_claims, 'at+jwt', kid, foreign)}"}
        )
        assert response.status_code == 401
        assert (await response.get_json())["error"] == "invalid_token"
        # Same jti as the real refresh token: only the signature differs.
        refresh = await web_token(client, world, refresh_form(forged(refresh_claims, "rt+jwt", kid, foreign)))
        await assert_token_error(refresh, "invalid_grant")
    assert (await refresh_row(runtime, tokens["refresh_token"])).used_at is None


async def test_public_client_code_flow_with_refresh(client: Any, world: World, runtime: Any) -> None:
    """A public client (auth method none) redeems with PKCE and refreshes with its client_id."""
    tokens = await code_flow(client, world, confidential=False)
    response = await post_token(client, refresh_form(tokens["refresh_token"], client_id=world.spa_id))
    assert response.status_code == 200, await response.get_data(as_text=True)
    # Without client_id the request carries no client identification at all.
    anonymous = await post_token(client, refresh_form((await response.get_json())["refresh_token"]))
    await assert_token_error(anonymous, "invalid_client", 401)
    assert jwt_parts(tokens["id_token"])[1]["aud"] == world.spa_id
