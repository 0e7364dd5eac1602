"""Token introspection (RFC 7662) and revocation (RFC 7009).

Introspection answers exactly ``{"active": false}`` for anything the calling client may not learn
about; revocation asserts the database rows (``revoked_at`` on the whole refresh-token family)
and the access-token denylist entries in the key-value store, including their TTL.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from idp.oauth.clients import ClientSpec, create_client
from idp.oauth.tokens import ID_TOKEN_TYP, LEEWAY, TokenService
from idp.storage.models import AuditEvent, RefreshToken
from tests.oauth_helpers import authorize, basic, code_flow, make_world, query_of

REVOKED_PREFIX = "revoked_jti:"


def jti_of(runtime: Any, token: str) -> str:
    claims = runtime.tokens.peek_claims(token)
    assert claims is not None
    return str(claims["jti"])


async def introspect(client: Any, world: Any, token: str | None, **extra: str) -> tuple[Any, dict[str, Any]]:
    form = {"token": token, **extra} if token is not None else dict(extra)
    response = await client.post("/introspect", form=form, headers=basic(world.web_id, world.web_secret))
    return response, await response.get_json()


async def revoke(client: Any, world: Any, token: str, **extra: str) -> Any:
    return await client.post("/revoke", form={"token": token, **extra}, headers=basic(world.web_id, world.web_secret))


async def userinfo_status(client: Any, token: str) -> int:
    response = await client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    return int(response.status_code)


async def other_client(runtime: Any) -> tuple[str, str]:
    created = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Other RP",
            client_type="confidential",
            redirect_uris=["https://other.example/callback"],
            grant_types=["authorization_code", "refresh_token", "client_credentials"],
        ),
    )
    assert created.client_secret is not None
    return created.client.id, created.client_secret


async def family_rows(runtime: Any, family_id: str) -> list[RefreshToken]:
    async with runtime.db.session() as session:
        result = await session.execute(select(RefreshToken).where(RefreshToken.family_id == family_id))
        return list(result.scalars())


async def row_of(runtime: Any, token: str) -> RefreshToken:
    async with runtime.db.session() as session:
        row = await session.get(RefreshToken, jti_of(runtime, token))
    assert row is not None
    return row


async def refresh(client: Any, world: Any, token: str) -> Any:
    return await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": token},
        headers=basic(world.web_id, world.web_secret),
    )


# -- introspection -------------------------------------------------------------------------------


async def test_introspect_requires_client_authentication(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    response = await client.post("/introspect", form={"token": tokens["access_token"]})
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = await client.post(
        "/introspect", form={"token": tokens["access_token"]}, headers=basic(world.web_id, "not-the-secret")
    )
    assert wrong.status_code == 401
    assert (await wrong.get_json())["error"] == "invalid_client"


async def test_introspect_rejects_public_clients(client: Any, runtime: Any) -> None:
    # RFC 7662 §2.1 requires authorization; discovery advertises no "none" method here.
    world = await make_world(runtime)
    tokens = await code_flow(client, world, confidential=False)
    response = await client.post("/introspect", form={"token": tokens["access_token"], "client_id": world.spa_id})
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "invalid_client"


async def test_introspect_active_access_token(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world, scope="openid email")
    response, body = await introspect(client, world, tokens["access_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    claims = runtime.tokens.peek_claims(tokens["access_token"])
    assert body["active"] is True
    assert body["scope"] == "openid email"
    assert body["client_id"] == world.web_id
    assert body["sub"] == world.user_id
    assert body["exp"] == claims["exp"]
    assert body["iat"] == claims["iat"]
    assert body["iss"] == runtime.settings.issuer
    assert body["token_type"] == "Bearer"


async def test_introspect_access_token_with_a_wrong_hint(client: Any, runtime: Any) -> None:
    # RFC 7662 §2.1: the hint only speeds up the search; a wrong one must not hide the token.
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    response, body = await introspect(client, world, tokens["access_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert body["active"] is True
    assert body["token_type"] == "Bearer"


async def test_introspect_missing_token_is_invalid_request(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    response, body = await introspect(client, world, None)
    assert response.status_code == 400
    assert body["error"] == "invalid_request"


async def test_introspect_inactive_tokens_reveal_nothing(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    other_id, other_secret = await other_client(runtime)

    # Unknown string.
    for value in ("not-a-token", "a.b.c", tokens["access_token"][:-4] + "AAAA"):
        response, body = await introspect(client, world, value)
        assert response.status_code == 200
        assert body == {"active": False}

    # Expired (issued by a clock 2 ttl in the past).
    ttl = runtime.settings.tokens.access_token_ttl
    past = TokenService(
        runtime.keys,
        runtime.tokens.denylist,
        runtime.settings.issuer,
        access_token_ttl=ttl,
        id_token_ttl=runtime.settings.tokens.id_token_ttl,
        clock=lambda: time.time() - 2 * ttl - LEEWAY,
    )
    expired = past.issue_access_token(subject=world.user_id, client_id=world.web_id, scope="openid")
    assert (await introspect(client, world, expired.value))[1] == {"active": False}

    # Another client's token, access and refresh alike.
    other_token = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic(other_id, other_secret)
    )
    assert other_token.status_code == 200
    assert (await introspect(client, world, (await other_token.get_json())["access_token"]))[1] == {"active": False}
    mine = await client.post(
        "/introspect", form={"token": tokens["refresh_token"]}, headers=basic(other_id, other_secret)
    )
    assert await mine.get_json() == {"active": False}
    mine = await client.post(
        "/introspect", form={"token": tokens["access_token"]}, headers=basic(other_id, other_secret)
    )
    assert await mine.get_json() == {"active": False}

    # An ID token is not an introspectable token.
    assert (await introspect(client, world, tokens["id_token"]))[1] == {"active": False}

    # Revoked.
    assert (await introspect(client, world, tokens["access_token"]))[1]["active"] is True
    assert (await revoke(client, world, tokens["access_token"])).status_code == 200
    assert (await introspect(client, world, tokens["access_token"]))[1] == {"active": False}


async def test_introspect_refresh_token_with_hint(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    row = await row_of(runtime, tokens["refresh_token"])
    for hint in ("refresh_token", "access_token", None):
        extra = {"token_type_hint": hint} if hint else {}
        response, body = await introspect(client, world, tokens["refresh_token"], **extra)
        assert response.status_code == 200
        assert body["active"] is True
        assert body["token_type"] == "refresh_token"
        assert body["client_id"] == world.web_id
        assert body["scope"] == row.scope
        assert body["iss"] == runtime.settings.issuer
        assert body["exp"] == int(row.expires_at.timestamp())


async def test_introspect_used_refresh_token_is_inactive(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    rotated = await refresh(client, world, tokens["refresh_token"])
    assert rotated.status_code == 200
    new = await rotated.get_json()
    response, body = await introspect(client, world, tokens["refresh_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert body == {"active": False}
    assert (await introspect(client, world, new["refresh_token"], token_type_hint="refresh_token"))[1]["active"]


async def test_introspect_pairwise_refresh_token_does_not_reveal_the_user_id(client: Any, runtime: Any) -> None:
    # OIDC Core §8.1: a pairwise client must never learn the local user id. Its refresh token (a
    # JWT the client holds) and its introspection carry the same pairwise sub as its other tokens.
    world = await make_world(runtime)
    created = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Pairwise RP",
            client_type="confidential",
            redirect_uris=["https://pairwise.example/cb"],
            subject_type="pairwise",
        ),
    )
    client_id, secret = created.client.id, created.client_secret
    assert secret is not None
    response, verifier = await authorize(client, client_id, "https://pairwise.example/cb", email=world.email)
    code = query_of(response.headers["Location"])["code"]
    token = await client.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://pairwise.example/cb",
            "code_verifier": verifier,
        },
        headers=basic(client_id, secret),
    )
    tokens = await token.get_json()
    subject = runtime.tokens.verify(tokens["id_token"], typ=ID_TOKEN_TYP, audience=client_id)["sub"]
    assert subject != world.user_id
    for value in (tokens["access_token"], tokens["refresh_token"]):
        answer = await client.post("/introspect", form={"token": value}, headers=basic(client_id, secret))
        body = await answer.get_json()
        assert body["active"] is True
        assert body["sub"] == subject
        assert world.user_id not in value.split(".")[1] and world.user_id not in str(runtime.tokens.peek_claims(value))


# -- revocation --------------------------------------------------------------------------------


async def test_revoke_access_token(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    access = tokens["access_token"]
    assert await userinfo_status(client, access) == 200
    response = await revoke(client, world, access, token_type_hint="access_token")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await userinfo_status(client, access) == 401

    # Denylist entry: kept no longer than the token's remaining lifetime plus 60 s.
    claims = runtime.tokens.peek_claims(access)
    key = REVOKED_PREFIX + claims["jti"]
    assert await runtime.kv.exists(key)
    ttl = await runtime.kv.ttl(key)
    assert ttl is not None
    assert 0 < ttl <= claims["exp"] - time.time() + 60 + 1
    # The refresh token of the same grant is untouched by revoking only the access token.
    assert (await row_of(runtime, tokens["refresh_token"])).revoked_at is None
    # And it is in the audit log, as every revocation is: whose token, which client, what kind.
    async with runtime.db.session() as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.event == "token_revoked"))).scalars().all()
    assert [(row.subject_id, row.client_id, row.details["token_type"], row.details["reason"]) for row in rows] == [
        (world.user_id, world.web_id, "access_token", "client_request")
    ]


async def test_revoke_access_token_with_a_wrong_hint(client: Any, runtime: Any) -> None:
    # RFC 7009 §2.1: an unmatched hint extends the search to the other token types.
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    response = await revoke(client, world, tokens["access_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert await userinfo_status(client, tokens["access_token"]) == 401
    assert (await row_of(runtime, tokens["refresh_token"])).revoked_at is None


async def test_revoke_refresh_token_revokes_family_and_its_access_tokens(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    first_access, first_refresh = tokens["access_token"], tokens["refresh_token"]
    rotated = await refresh(client, world, first_refresh)
    assert rotated.status_code == 200
    second = await rotated.get_json()
    family_id = (await row_of(runtime, first_refresh)).family_id
    assert len(await family_rows(runtime, family_id)) == 2
    assert await userinfo_status(client, first_access) == 200
    assert await userinfo_status(client, second["access_token"]) == 200

    response = await revoke(client, world, second["refresh_token"], token_type_hint="refresh_token")
    assert response.status_code == 200

    rows = await family_rows(runtime, family_id)
    assert len(rows) == 2 and all(row.revoked_at is not None for row in rows)
    again = await refresh(client, world, second["refresh_token"])
    assert again.status_code == 400
    assert (await again.get_json())["error"] == "invalid_grant"
    # Every access token issued from the family stops working.
    assert await userinfo_status(client, first_access) == 401
    assert await userinfo_status(client, second["access_token"]) == 401
    # They carry their grant's id; the grant is denied as long as the last of them could live.
    for access in (first_access, second["access_token"]):
        assert runtime.tokens.peek_claims(access)["gid"] == family_id
    ttl = await runtime.kv.ttl("revoked_grant:" + family_id)
    assert ttl is not None and 0 < ttl <= runtime.settings.tokens.access_token_ttl + 2 * 60 + 1


async def test_revoke_refresh_token_leaves_other_grants_alone(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    first = await code_flow(client, world)
    second = await code_flow(client, world)
    assert (await revoke(client, world, first["refresh_token"])).status_code == 200
    assert (await row_of(runtime, second["refresh_token"])).revoked_at is None
    assert await userinfo_status(client, second["access_token"]) == 200
    assert (await refresh(client, world, second["refresh_token"])).status_code == 200


async def test_revoke_garbage_is_ok(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    for value in ("garbage", "a.b.c", "x" * 5000):
        response = await revoke(client, world, value)
        assert response.status_code == 200
        assert await response.get_data(as_text=True) == ""


async def test_revoke_another_clients_token_is_refused(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    other_id, other_secret = await other_client(runtime)
    for value in (tokens["access_token"], tokens["refresh_token"]):
        response = await client.post("/revoke", form={"token": value}, headers=basic(other_id, other_secret))
        assert response.status_code == 400
        assert (await response.get_json())["error"] == "invalid_request"
    # Nothing was revoked.
    assert (await row_of(runtime, tokens["refresh_token"])).revoked_at is None
    assert not await runtime.kv.exists(REVOKED_PREFIX + jti_of(runtime, tokens["access_token"]))
    assert await userinfo_status(client, tokens["access_token"]) == 200
    assert (await refresh(client, world, tokens["refresh_token"])).status_code == 200


async def test_revoke_unsupported_token_type_hint(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    response = await revoke(client, world, tokens["access_token"], token_type_hint="id_token")
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "unsupported_token_type"
    assert await userinfo_status(client, tokens["access_token"]) == 200


async def test_revoke_requires_client_authentication(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    response = await client.post("/revoke", form={"token": tokens["access_token"]})
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "invalid_client"
    wrong = await client.post(
        "/revoke", form={"token": tokens["access_token"]}, headers=basic(world.web_id, "wrong-secret")
    )
    assert wrong.status_code == 401
    assert (await wrong.get_json())["error"] == "invalid_client"
    assert await userinfo_status(client, tokens["access_token"]) == 200


async def test_public_client_revokes_its_refresh_token(client: Any, runtime: Any) -> None:
    # RFC 7009 §2.1: public clients identify themselves with client_id alone.
    world = await make_world(runtime)
    tokens = await code_flow(client, world, confidential=False)
    response = await client.post("/revoke", form={"token": tokens["refresh_token"], "client_id": world.spa_id})
    assert response.status_code == 200
    assert (await row_of(runtime, tokens["refresh_token"])).revoked_at is not None
    assert await userinfo_status(client, tokens["access_token"]) == 401


async def test_tokens_of_a_disabled_user_are_inactive(client: Any, runtime: Any) -> None:
    from idp.storage.models import User

    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    _, before = await introspect(client, world, tokens["access_token"])
    assert before["active"] is True
    async with runtime.db.session() as session:
        (await session.get(User, world.user_id)).disabled = True
    for token in (tokens["access_token"], tokens["refresh_token"]):
        _, body = await introspect(client, world, token)
        assert body == {"active": False}


async def test_userinfo_refuses_tokens_of_a_disabled_client(client: Any, runtime: Any) -> None:
    from idp.oauth.clients import set_client_disabled

    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    assert await userinfo_status(client, tokens["access_token"]) == 200
    # Disabled the way every door does it (admin API and pages, CLI): the cached client goes too.
    assert await set_client_disabled(runtime.db, runtime.events, world.web_id, True)
    assert await userinfo_status(client, tokens["access_token"]) == 401
