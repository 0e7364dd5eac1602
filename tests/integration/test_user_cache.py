"""Accounts are cached in memory for UserInfo and introspection's subject check
(idp.storage.repositories.user_cache), and a cached account is never a stale security decision:
whatever a database session commits to the users table (an ORM change, an UPDATE or DELETE
statement, by any code) forgets the account at once on this node and within a second on every
other node sharing the key-value store, without the code that changed it announcing anything. A
rolled-back change forgets nothing. With the in-process store another process's changes (the
command line's) arrive through the database (idp.storage.announcements)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import delete, update

from idp.accounts.profile import profile
from idp.storage.models import User
from idp.storage.repositories import UserRepository
from tests.cache_helpers import heard_so_far
from tests.integration.test_cli_user_admin import run_json
from tests.integration.test_units_of_work import counting
from tests.oauth_helpers import World, basic, code_flow, make_world


async def userinfo(client: Any, token: str) -> tuple[int, dict[str, Any]]:
    response = await client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    return int(response.status_code), await response.get_json()


async def introspected(client: Any, world: World, token: str) -> bool:
    response = await client.post("/introspect", form={"token": token}, headers=basic(world.web_id, world.web_secret))
    return bool((await response.get_json())["active"])


@pytest.fixture
async def world(runtime: Any) -> World:
    await runtime.outbox.stop()  # its worker's sessions would count as the requests'
    return await make_world(runtime)


@pytest.fixture
async def token(client: Any, world: World) -> str:
    tokens = await code_flow(client, world, scope="openid profile email")
    return str(tokens["access_token"])


async def write(runtime: Any, statement: Any) -> None:
    async with runtime.db.session() as session:
        await session.execute(statement)


async def test_a_profile_change_shows_in_userinfo_at_once(client: Any, runtime: Any, world: World, token: str) -> None:
    assert (await userinfo(client, token))[1]["name"] == "Alice Example"  # now cached (Redis)
    await profile.update_profile(runtime.db, runtime.events, world.user_id, {"name": "Alice Renamed"})
    assert (await userinfo(client, token))[1]["name"] == "Alice Renamed"


@pytest.mark.parametrize(
    "how", ["orm", "update by id", "update by id and more", "update of many", "delete"], ids=lambda how: how
)
async def test_a_disabled_or_deleted_user_is_refused_at_once_however_the_row_was_written(
    client: Any, runtime: Any, world: World, token: str, how: str
) -> None:
    assert (await userinfo(client, token))[0] == 200
    assert await introspected(client, world, token)
    if how == "orm":
        async with runtime.db.session() as session:
            user = await UserRepository(session).get(world.user_id)
            user.disabled = True
    elif how == "update by id":
        await write(runtime, update(User).where(User.id == world.user_id).values(disabled=True))
    elif how == "update by id and more":
        enabled = User.disabled.is_(False)
        await write(runtime, update(User).where(enabled, User.id == world.user_id).values(disabled=True))
    elif how == "update of many":
        await write(runtime, update(User).where(User.email.like("%@example.com")).values(disabled=True))
    else:
        await write(runtime, delete(User).where(User.id == world.user_id))
    assert (await userinfo(client, token))[0] == 401
    assert not await introspected(client, world, token)


async def test_userinfo_reads_nothing_from_the_database_once_cached(
    client: Any, runtime: Any, world: World, token: str
) -> None:
    assert runtime.user_cache.active
    await heard_so_far(runtime.user_cache)
    assert (await userinfo(client, token))[0] == 200
    with counting(runtime) as counts:
        assert (await userinfo(client, token))[0] == 200
        assert await introspected(client, world, token)
    # Introspection opens its unit of work for the refresh-token look-up it may need; it runs no
    # statement for an access token whose client and user are cached, so it takes no connection.
    assert counts.checkouts == 0, counts


async def test_a_rolled_back_change_forgets_nothing(client: Any, runtime: Any, world: World, token: str) -> None:
    await heard_so_far(runtime.user_cache)
    assert (await userinfo(client, token))[0] == 200
    assert world.user_id in runtime.user_cache._entries
    with pytest.raises(RuntimeError):
        async with runtime.db.session() as session:
            await session.execute(update(User).where(User.id == world.user_id).values(name="Never"))
            raise RuntimeError("rolled back")
    assert world.user_id in runtime.user_cache._entries
    assert (await userinfo(client, token))[1]["name"] == "Alice Example"


async def test_a_node_that_cannot_hear_changes_reads_every_account_from_the_database(
    client: Any, runtime: Any, token: str, world: World
) -> None:
    assert (await userinfo(client, token))[0] == 200
    await runtime.user_cache.stop()  # deaf: as when its subscription to the store is lost
    assert not runtime.user_cache.active
    await write(runtime, update(User).where(User.id == world.user_id).values(name="Changed While Deaf"))
    assert (await userinfo(client, token))[1]["name"] == "Changed While Deaf"
    assert runtime.user_cache._entries == {}
    await runtime.user_cache.start()
    assert runtime.user_cache.active


async def test_a_change_made_from_the_command_line_shows_within_a_second(
    client: Any, runtime: Any, world: World, token: str, cli_env: dict[str, str]
) -> None:
    await write(runtime, update(User).where(User.id == world.user_id).values(email_verified=False))
    await heard_so_far(runtime.user_cache)
    assert (await userinfo(client, token))[1]["email_verified"] is False
    assert world.user_id in runtime.user_cache._entries  # cached by the serving process
    # Another process: it changes the row and announces, as every unit of work does.
    assert (await asyncio.to_thread(run_json, cli_env, "users", "verify", world.email))["email_verified"] is True

    async def shown() -> bool:
        return (await userinfo(client, token))[1]["email_verified"] is True

    assert await within(1.0, shown) < 1.0


# -- two nodes sharing Redis ---------------------------------------------------------------------


async def within(seconds: float, done: Any) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await done():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not yet after {seconds} s")


async def test_a_user_disabled_on_one_node_is_refused_on_another_within_a_second(
    runtime: Any, world: World, token: str, second_node: Any
) -> None:
    other = second_node.test_client()
    await heard_so_far(second_node.runtime.user_cache)
    assert (await userinfo(other, token))[0] == 200  # cached on node B
    assert world.user_id in second_node.runtime.user_cache._entries
    await write(runtime, update(User).where(User.id == world.user_id).values(disabled=True))  # node A

    async def refused() -> bool:
        return (await userinfo(other, token))[0] == 401 and not await introspected(other, world, token)

    assert await within(1.0, refused) < 1.0


async def test_a_profile_changed_on_one_node_shows_on_another_within_a_second(
    runtime: Any, world: World, token: str, second_node: Any
) -> None:
    other = second_node.test_client()
    assert (await userinfo(other, token))[1]["email_verified"] is True
    async with runtime.db.session() as session:  # node A, through the ORM
        user = await UserRepository(session).get(world.user_id)
        user.email_verified = False

    async def shown() -> bool:
        return (await userinfo(other, token))[1]["email_verified"] is False

    assert await within(1.0, shown) < 1.0
