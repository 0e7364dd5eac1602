"""Announcements between processes without a shared key-value store go through the database
(idp.storage.announcements): what one in-process store publishes reaches the listeners of another
process on the same database, never its own twice; the writing waits for nothing and is finished
on close; rows are pruned; a relay that can't read ends its listeners, so the caches behind them
are bypassed until it reads again. Runs on both databases (CI's two stages)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import OperationalError

from idp.storage.announcements import DatabaseRelay, relay_for
from idp.storage.db import Database
from idp.storage.kv import KeyValueUnavailable, MemoryStore
from idp.storage.models import Announcement, OAuthClient, utcnow
from tests.oauth_helpers import basic, make_world


@pytest.fixture
async def relays(database_url: str) -> AsyncIterator[list[tuple[MemoryStore, DatabaseRelay]]]:
    made: list[tuple[MemoryStore, DatabaseRelay]] = []
    for _ in range(2):
        store = MemoryStore("p:")
        relay = DatabaseRelay(database_url, store, poll_every=0.05)
        await relay.start()
        made.append((store, relay))
    yield made
    for _, relay in made:
        await relay.close()


async def heard(store: MemoryStore, channel: str, count: int, within: float = 1.0) -> list[str]:
    """The first ``count`` messages a listener of ``channel`` hears, subscribed before this returns."""
    messages: list[str] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async for message in store.listen(channel, ready):
            messages.append(message)
            if len(messages) == count:
                return

    task = asyncio.create_task(listen())
    await ready.wait()
    return await _finish(task, messages, within)


async def _finish(task: asyncio.Task[None], messages: list[str], within: float) -> list[str]:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, within)
    return messages


async def rows(database_url: str) -> int:
    db = Database(database_url)
    try:
        async with db.session() as session:
            return int((await session.execute(select(func.count()).select_from(Announcement))).scalar_one())
    finally:
        await db.close()


async def test_what_one_process_publishes_reaches_the_other_once_and_itself_once(
    relays: list[tuple[MemoryStore, DatabaseRelay]],
) -> None:
    (a, _), (b, _) = relays
    on_a = asyncio.create_task(heard(a, "changes", 2, within=0.6))
    on_b = asyncio.create_task(heard(b, "changes", 2))
    await asyncio.sleep(0.05)  # both listening
    await a.publish("changes", "client-1")
    await a.publish("changes", "client-2")
    assert await on_b == ["client-1", "client-2"]
    # The publisher's own listener heard each at once, and not again from the table.
    assert await on_a == ["client-1", "client-2"]
    assert a.shared and b.shared


async def test_publishing_waits_for_nothing_and_closing_writes_what_waits(database_url: str) -> None:
    store = MemoryStore("p:")
    relay = DatabaseRelay(database_url, store)
    await store.publish("changes", "one")  # no read running: this process only publishes
    assert relay._outgoing == [("p:changes", "one")]  # written in the background, not yet
    await relay.close()
    assert await rows(database_url) == 1
    assert not store.shared  # detached on close


async def test_what_was_published_before_a_process_started_is_not_handed_to_it(
    database_url: str, relays: list[tuple[MemoryStore, DatabaseRelay]]
) -> None:
    (a, relay_a), _ = relays
    await a.publish("changes", "before")
    await relay_a._writer  # type: ignore[misc]
    late = MemoryStore("p:")
    relay = DatabaseRelay(database_url, late, poll_every=0.05)
    await relay.start()
    try:
        assert await heard(late, "changes", 1, within=0.4) == []
    finally:
        await relay.close()


async def test_a_row_that_commits_after_a_later_one_is_still_handed_on(database_url: str) -> None:
    """PostgreSQL assigns ids before commit: a lower id may become visible after a higher one."""
    now = [1000.0]
    store = MemoryStore("p:")
    relay = DatabaseRelay(database_url, store, clock=lambda: now[0])
    await relay.start()
    db = Database(database_url)
    messages: list[str] = []

    async def add(row_id: int, message: str) -> None:
        async with db.session() as session:
            await session.execute(
                insert(Announcement).values(
                    id=row_id, origin="other", channel="p:changes", message=message, created_at=utcnow()
                )
            )

    try:
        ready = asyncio.Event()

        async def listen() -> None:
            async for message in store.listen("changes", ready):
                messages.append(message)

        task = asyncio.create_task(listen())
        await ready.wait()
        base = relay._floor
        await add(base + 2, "later")
        await relay.read()
        await add(base + 1, "earlier, committed late")
        now[0] += 1.0  # within the grace
        await relay.read()
        now[0] += 5.0  # past it: the reader moves on
        await relay.read()
        await asyncio.sleep(0)
        assert messages == ["later", "earlier, committed late"]
        assert relay._floor == base + 2 and relay._seen == {}
        task.cancel()
    finally:
        await db.close()
        await relay.close()


async def test_rows_older_than_keep_for_are_pruned(database_url: str) -> None:
    store = MemoryStore("p:")
    relay = DatabaseRelay(database_url, store, keep_for=60.0)
    await store.publish("changes", "old")
    await store.publish("changes", "new")
    await relay._writer  # type: ignore[misc]
    db = Database(database_url)
    try:
        async with db.session() as session:
            first = (await session.execute(select(func.min(Announcement.id)))).scalar_one()
            await session.execute(
                update(Announcement).where(Announcement.id == first).values(created_at=utcnow() - timedelta(seconds=61))
            )
        await relay.prune()
        async with db.session() as session:
            left = (await session.execute(select(Announcement.message))).scalars().all()
        assert left == ["new"]
    finally:
        await db.close()
        await relay.close()


async def test_a_relay_that_cannot_read_ends_its_listeners(relays: list[tuple[MemoryStore, DatabaseRelay]]) -> None:
    (a, relay_a), _ = relays
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise OperationalError("SELECT", None, Exception("disk I/O error"))

    ready = asyncio.Event()

    async def listen() -> None:
        async for _ in a.listen("changes", ready):
            pass

    task = asyncio.create_task(listen())
    await ready.wait()
    relay_a.read = broken  # type: ignore[method-assign]
    with pytest.raises(KeyValueUnavailable):
        await asyncio.wait_for(task, 1.0)
    assert failed.is_set() and not relay_a.hearing
    with pytest.raises(KeyValueUnavailable):  # subscribing again fails until a read succeeds
        async for _ in a.listen("changes"):
            pass


def test_a_database_of_one_process_gets_no_relay() -> None:
    assert relay_for("sqlite+aiosqlite://", MemoryStore()) is None
    assert relay_for("sqlite+aiosqlite:///:memory:", MemoryStore()) is None


async def test_the_serving_caches_are_bypassed_while_the_relay_cannot_read(client: Any, runtime: Any) -> None:
    if runtime.relay is None:
        pytest.skip("the in-process store's relay (without Redis)")
    world = await make_world(runtime)
    auth = basic(world.web_id, world.web_secret)
    assert (await client.post("/token", form={"grant_type": "client_credentials"}, headers=auth)).status_code == 200
    assert runtime.client_cache.active and runtime.client_cache.in_memory(world.web_id) is not None
    working = runtime.relay.read

    async def broken() -> None:
        raise OperationalError("SELECT", None, Exception("disk I/O error"))

    runtime.relay.read = broken
    for _ in range(50):
        if not runtime.client_cache.active:
            break
        await asyncio.sleep(0.02)
    assert not runtime.client_cache.active and not runtime.user_cache.active
    # A change nobody announces (written straight to the table) is seen at once meanwhile.
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == world.web_id).values(disabled=True))
    assert (await client.post("/token", form={"grant_type": "client_credentials"}, headers=auth)).status_code == 401
    runtime.relay.read = working
    for _ in range(150):  # the subscription tries again after 0.5 s, then 1 s
        if runtime.client_cache.active:
            break
        await asyncio.sleep(0.02)
    assert runtime.client_cache.active
