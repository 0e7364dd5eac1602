"""CORS: only registered web origins, only on the endpoints browser apps call, never credentials."""

from __future__ import annotations

import pytest

from tests.oauth_helpers import basic, code_flow, make_world

SPA = "http://127.0.0.1:8080"  # registered as the SPA's web origin by make_world
EVIL = "https://evil.example"


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect", "/userinfo"])
async def test_preflight_from_a_registered_origin(client, runtime, path) -> None:
    await make_world(runtime)
    response = await client.options(
        path,
        headers={
            "Origin": SPA,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SPA
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize("path", ["/token", "/userinfo"])
async def test_unregistered_origin_gets_no_cors_headers(client, runtime, path) -> None:
    await make_world(runtime)
    response = await client.options(path, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers
    null_origin = await client.options(path, headers={"Origin": "null", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in null_origin.headers


async def test_actual_requests_and_errors_carry_cors_for_the_registered_origin(client, runtime) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world, confidential=False)
    userinfo = await client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}", "Origin": SPA}
    )
    assert userinfo.status_code == 200
    assert userinfo.headers["Access-Control-Allow-Origin"] == SPA
    # The SPA must be able to read error responses and their challenge too.
    failed = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": "x", "client_id": world.spa_id},
        headers={"Origin": SPA},
    )
    assert failed.status_code == 400
    assert failed.headers["Access-Control-Allow-Origin"] == SPA
    assert "WWW-Authenticate" in failed.headers["Access-Control-Expose-Headers"]
    evil = await client.post(
        "/revoke", form={"token": "x"}, headers={**basic(world.web_id, world.web_secret), "Origin": EVIL}
    )
    assert "Access-Control-Allow-Origin" not in evil.headers


async def test_authorization_endpoint_never_answers_cross_origin(client, runtime) -> None:
    world = await make_world(runtime)
    response = await client.get(f"/authorize?client_id={world.spa_id}", headers={"Origin": SPA})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await client.options("/authorize", headers={"Origin": SPA, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_a_disabled_clients_origin_is_not_allowed(client, runtime) -> None:
    from idp.storage.models import OAuthClient

    world = await make_world(runtime)
    async with runtime.db.session() as session:
        (await session.get(OAuthClient, world.spa_id)).disabled = True
    await runtime.cors.reload()
    response = await client.options("/token", headers={"Origin": SPA, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers
