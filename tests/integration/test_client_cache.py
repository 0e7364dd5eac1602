"""Clients are cached in memory for the protocol endpoints (idp.storage.repositories.client_cache),
and a cached client is never a stale security decision: a disabled client or a rotated secret is
refused at once on the node that changed it and within a second on every other node sharing the
key-value store, or by the command line; a node that can't hear changes doesn't use its cache. With
the in-process store (the embedded default) other processes' changes arrive through the database
(idp.storage.announcements, tested in test_announcements.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from idp.oauth.clients import rotate_client_secret, set_client_disabled
from idp.storage.repositories import ClientRepository
from tests.cache_helpers import heard_so_far
from tests.integration.test_cli import run_idp
from tests.oauth_helpers import basic, make_world

CC = {"grant_type": "client_credentials"}


async def token_status(client: Any, client_id: str, secret: str) -> int:
    response = await client.post("/token", form=CC, headers=basic(client_id, secret))
    return int(response.status_code)


async def test_a_disabled_client_is_refused_at_once_though_it_was_cached(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    assert await token_status(client, world.web_id, world.web_secret) == 200  # now cached
    assert await set_client_disabled(runtime.db, runtime.events, world.web_id, True)
    assert await token_status(client, world.web_id, world.web_secret) == 401
    assert await set_client_disabled(runtime.db, runtime.events, world.web_id, False)
    assert await token_status(client, world.web_id, world.web_secret) == 200


async def test_a_rotated_secret_replaces_the_cached_one_at_once(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    assert await token_status(client, world.web_id, world.web_secret) == 200
    new_secret = await rotate_client_secret(runtime.db, runtime.events, world.web_id)
    assert await token_status(client, world.web_id, world.web_secret) == 401
    assert await token_status(client, world.web_id, new_secret) == 200


async def test_a_node_that_cannot_hear_changes_reads_every_client_from_the_database(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    assert await token_status(client, world.web_id, world.web_secret) == 200
    await runtime.client_cache.stop()  # deaf: as when its subscription to the store is lost
    assert not runtime.client_cache.active
    # A change that announces nothing (written straight to the table) is still seen at once.
    async with runtime.db.session() as session:
        await ClientRepository(session).set_disabled(world.web_id, True)
    assert await token_status(client, world.web_id, world.web_secret) == 401
    await runtime.client_cache.start()
    assert runtime.client_cache.active


async def test_cached_entries_expire_and_unknown_ids_are_not_kept(runtime: Any) -> None:
    world = await make_world(runtime)
    cache = runtime.client_cache
    now = [1000.0]
    cache._clock = lambda: now[0]
    await heard_so_far(cache)
    assert (await cache.get(world.web_id)).disabled is False
    async with runtime.db.session() as session:
        await ClientRepository(session).set_disabled(world.web_id, True)  # unannounced
    assert (await cache.get(world.web_id)).disabled is False  # served from memory...
    now[0] += cache._max_age
    assert (await cache.get(world.web_id)).disabled is True  # ...until max_age
    for n in range(50):
        assert await cache.get(f"no-such-client-{n}") is None
    assert set(cache._entries) == {world.web_id}


async def test_the_cache_holds_at_most_max_entries(runtime: Any) -> None:
    world = await make_world(runtime)
    cache = runtime.client_cache
    cache._max_entries = 1
    await heard_so_far(cache)
    await cache.get(world.web_id)
    await cache.get(world.spa_id)
    assert list(cache._entries) == [world.spa_id]


async def test_a_client_disabled_from_the_command_line_is_refused_within_a_second(
    client: Any, runtime: Any, cli_env: dict[str, str]
) -> None:
    """Another process (the command line beside the server) announces its change: through Redis,
    or with the in-process store through the database (idp.storage.announcements)."""
    world = await make_world(runtime)
    await heard_so_far(runtime.client_cache)
    assert await token_status(client, world.web_id, world.web_secret) == 200
    assert runtime.client_cache.in_memory(world.web_id) is not None  # cached by the serving process
    done = await asyncio.to_thread(run_idp, cli_env, "clients", "disable", world.web_id)
    assert done.returncode == 0, done.stderr
    assert await refused_within(client, world.web_id, world.web_secret, 1.0) < 1.0


# -- two nodes sharing Redis ---------------------------------------------------------------------


async def refused_within(client: Any, client_id: str, secret: str, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await token_status(client, client_id, secret) == 401:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"still accepted after {seconds} s")


async def test_a_client_disabled_on_one_node_is_refused_on_another_within_a_second(
    client: Any, runtime: Any, second_node: Any
) -> None:
    world = await make_world(runtime)
    other = second_node.test_client()
    assert await token_status(other, world.web_id, world.web_secret) == 200  # cached on node B
    assert second_node.runtime.client_cache.active
    assert await set_client_disabled(runtime.db, runtime.events, world.web_id, True)  # on node A
    assert await refused_within(other, world.web_id, world.web_secret, 1.0) < 1.0


async def test_a_secret_rotated_on_one_node_is_refused_on_another_within_a_second(
    client: Any, runtime: Any, second_node: Any
) -> None:
    world = await make_world(runtime)
    other = second_node.test_client()
    assert await token_status(other, world.web_id, world.web_secret) == 200
    new_secret = await rotate_client_secret(runtime.db, runtime.events, world.web_id)
    assert await refused_within(other, world.web_id, world.web_secret, 1.0) < 1.0
    assert await token_status(other, world.web_id, new_secret) == 200
