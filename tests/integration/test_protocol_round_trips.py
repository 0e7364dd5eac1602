"""The key-value round trips of the hot protocol requests (issue 14: a hot path does only the
round trips the protocol needs), counted: a client_credentials token, an introspection and a
revocation by a client the node holds in memory (idp.storage.repositories.client_cache, with
Redis) count both rate limits in one round trip, after the client's secret was checked; without
the cache (the in-process store) the address is counted before the client is looked up, and the
client afterwards. The order of the two paths is tested in tests/unit/oauth/test_client_authentication.py.

A refresh rotates in one transaction of two statements: spending the token (which checks it and
its user) and storing its successor; a code is redeemed the same way."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cost_helpers import Cost, counting
from tests.oauth_helpers import WEB_REDIRECT, World, authorize, basic, code_flow, make_world, query_of


@pytest.fixture
async def world(runtime: Any) -> World:
    await runtime.outbox.stop()
    made = await make_world(runtime)
    assert await runtime.client_cache.get(made.web_id) is not None  # in memory from here on (Redis)
    return made


def limit_round_trips(runtime: Any) -> int:
    return 1 if runtime.client_cache.active else 2


async def cost_of(client: Any, runtime: Any, path: str, form: dict[str, str], headers: dict[str, str]) -> Cost:
    with pytest.MonkeyPatch.context() as monkeypatch, counting(runtime, monkeypatch) as cost:
        response = await client.post(path, form=form, headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return cost


async def test_a_client_credentials_token_counts_its_limits_in_the_round_trips_it_needs(
    client: Any, runtime: Any, world: World
) -> None:
    auth = basic(world.web_id, world.web_secret)
    cost = await cost_of(client, runtime, "/token", {"grant_type": "client_credentials"}, auth)
    assert cost.kv == ["hit_windows"] * limit_round_trips(runtime), cost.summary()


async def test_an_introspection_counts_its_limits_in_the_round_trips_it_needs(
    client: Any, runtime: Any, world: World
) -> None:
    auth = basic(world.web_id, world.web_secret)
    token = (await (await client.post("/token", form={"grant_type": "client_credentials"}, headers=auth)).get_json())[
        "access_token"
    ]
    assert await runtime.tokens.denylist.reload()  # a running node's denylist (loaded once from SQL)
    cost = await cost_of(client, runtime, "/introspect", {"token": token}, auth)
    # The limits, and the token's revocation: in memory on a node that holds the revocations (with
    # Redis), else looked up in the key-value store.
    denylist = [] if runtime.tokens.denylist.in_memory else ["get_many"]
    assert cost.kv == ["hit_windows"] * limit_round_trips(runtime) + denylist, cost.summary()


async def test_a_refused_secret_is_counted_against_the_address_only(client: Any, runtime: Any, world: World) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch, counting(runtime, monkeypatch) as cost:
        response = await client.post(
            "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, "wrong")
        )
    assert response.status_code == 401
    assert cost.kv == ["hit_windows"], cost.summary()


async def test_a_refresh_rotates_in_one_transaction_of_two_statements(client: Any, runtime: Any, world: World) -> None:
    auth = basic(world.web_id, world.web_secret)
    refresh_token = (await code_flow(client, world))["refresh_token"]
    # Without the client cache (the in-process store) the client is read in a session of its own.
    client_read = [] if runtime.client_cache.active else ["BEGIN", "SELECT oauth_clients", "COMMIT"]
    for _ in range(2):  # the first rotation, and the rotation of a rotated token
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        with pytest.MonkeyPatch.context() as monkeypatch, counting(runtime, monkeypatch) as cost:
            response = await client.post("/token", form=form, headers=auth)
        assert response.status_code == 200, await response.get_data(as_text=True)
        rotation = ["BEGIN", "UPDATE refresh_tokens", "INSERT refresh_tokens", "COMMIT"]
        assert cost.statements == client_read + rotation, cost.summary()
        assert cost.kv == ["hit_windows"] * limit_round_trips(runtime), cost.summary()
        refresh_token = (await response.get_json())["refresh_token"]


async def test_a_code_is_redeemed_in_one_transaction_of_the_statements_it_needs(
    client: Any, runtime: Any, world: World
) -> None:
    await code_flow(client, world)  # signs in: the session exists and knows the client from here on
    response, verifier = await authorize(client, world.web_id, WEB_REDIRECT)
    assert response.status_code == 303, await response.get_data(as_text=True)
    form = {
        "grant_type": "authorization_code",
        "code": query_of(response.headers["Location"])["code"],
        "redirect_uri": WEB_REDIRECT,
        "code_verifier": verifier or "",
    }
    client_read = [] if runtime.client_cache.active else ["BEGIN", "SELECT oauth_clients", "COMMIT"]
    cost = await cost_of(client, runtime, "/token", form, basic(world.web_id, world.web_secret))
    # Spending the code checks it, its client and its user in one UPDATE; the grant's refresh
    # token is one INSERT; the sign-in's audit record is written in a transaction of its own.
    redemption = ["BEGIN", "UPDATE authorization_codes", "INSERT refresh_tokens", "COMMIT"]
    audit = ["BEGIN", "INSERT audit_log", "COMMIT"]
    assert cost.statements == client_read + redemption + audit, cost.summary()
