"""Serving nodes on a shared key-value store hold the revocations in force in memory
(idp.oauth.denylist), so checking an access token costs no round trip; and a revocation held there
is never a stale security decision: one made on another node is refused here within a second, one
made while this node could not hear is loaded when it hears again, one whose announcement was lost
is loaded within the periodic re-sync, and a node holding too many checks the store instead.

Needs Redis (IDP_TEST_REDIS_URL; CI's second stage): with the in-process store there is no other
process to hear, and checks are answered by that store, in memory already."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from idp.oauth import denylist as denylist_module
from idp.oauth.denylist import CHANNEL, Denylist
from idp.storage.kv import KeyValueUnavailable
from idp.storage.repositories import RevocationRepository
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.skipif(not TEST_REDIS_URL, reason="held in memory with Redis only (IDP_TEST_REDIS_URL)")

LATER = datetime.fromtimestamp(2_000_000_000, UTC)


@pytest.fixture
def store_refuses(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make every key-value read of a check fail from now on: an answer then came from memory."""

    def refuse() -> None:
        async def unavailable(*_keys: str) -> Any:
            raise KeyValueUnavailable("the store was asked")

        monkeypatch.setattr(runtime.kv, "get_many", unavailable)

    return refuse


async def eventually(condition: Callable[[], Any], within: float = 1.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def test_a_serving_node_answers_checks_from_memory(runtime: Any, store_refuses: Callable[[], None]) -> None:
    denylist = runtime.tokens.denylist
    assert denylist.in_memory
    await runtime.tokens.revoke_access_token("jti-here", int(LATER.timestamp()))
    store_refuses()
    assert await denylist.is_revoked("jti-here", None) is True
    assert await denylist.is_revoked("jti-other", "grant-other") is False


async def test_a_revocation_on_another_node_is_refused_here_within_a_second(
    runtime: Any, store_refuses: Callable[[], None]
) -> None:
    other_node = Denylist(runtime.kv, runtime.db)
    async with runtime.db.session() as session:
        await RevocationRepository(session).revoke_access_token("jti-there", LATER, datetime.now(UTC))
        await RevocationRepository(session).revoke_grants(["grant-there"], LATER, datetime.now(UTC))
    store_refuses()
    await other_node.deny_access_token("jti-there", LATER)
    await other_node.deny_grant("grant-there", LATER)
    denylist = runtime.tokens.denylist

    async def both_refused() -> bool:
        return await denylist.is_revoked("jti-there", None) and await denylist.is_revoked("any-jti", "grant-there")

    await eventually(both_refused)


async def test_a_revocation_made_while_this_node_was_deaf_is_loaded_when_it_hears_again(
    runtime: Any, store_refuses: Callable[[], None]
) -> None:
    denylist = runtime.tokens.denylist
    await denylist.stop()  # not subscribed: the announcement below goes unheard
    assert not denylist.in_memory
    await Denylist(runtime.kv, runtime.db).revoke_access_token("jti-unheard", LATER)
    assert await denylist.is_revoked("jti-unheard", None) is True  # from the store meanwhile
    await denylist.listen()
    assert denylist.in_memory
    store_refuses()
    assert await denylist.is_revoked("jti-unheard", None) is True  # loaded from the database


async def test_a_revocation_whose_announcement_was_lost_is_loaded_by_the_periodic_resync(
    runtime: Any, store_refuses: Callable[[], None]
) -> None:
    denylist = runtime.tokens.denylist
    async with runtime.db.session() as session:  # recorded, never announced
        await RevocationRepository(session).revoke_access_token("jti-lost", LATER, datetime.now(UTC))
    store_refuses()
    assert await denylist.is_revoked("jti-lost", None) is False
    keeper = asyncio.create_task(denylist.keep_loaded(check_every=0.02))
    try:
        await eventually(lambda: denylist.is_revoked("jti-lost", None))
    finally:
        keeper.cancel()


async def test_a_revocation_in_memory_ends_when_its_token_would_have_expired(runtime: Any) -> None:
    denylist = runtime.tokens.denylist
    await runtime.tokens.revoke_access_token("jti-brief", int(time.time()) - 62)  # exp + leeway: past
    assert denylist.in_memory
    assert await denylist.is_revoked("jti-brief", None) is False


async def test_a_node_holding_too_many_revocations_checks_the_store(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(denylist_module, "MIRROR_LIMIT", 2)
    denylist = runtime.tokens.denylist
    for number in range(3):
        await runtime.tokens.revoke_access_token(f"jti-{number}", int(LATER.timestamp()))
    assert not denylist.in_memory
    assert denylist._mirror.tokens == {}  # dropped: memory stays bounded, the database has them
    assert [await denylist.is_revoked(f"jti-{number}", None) for number in range(3)] == [True] * 3
    # Loaded again (the periodic re-sync), still too many: still the store.
    await denylist._load_mirror()
    assert not denylist.in_memory


async def test_an_announcement_that_is_not_a_revocation_is_ignored_and_hearing_goes_on(runtime: Any) -> None:
    denylist = runtime.tokens.denylist
    for message in ("nonsense", "x 1 jti", "t soon jti"):
        await runtime.kv.publish(CHANNEL, message)
    await Denylist(runtime.kv, runtime.db).deny_access_token("jti-after", LATER)

    async def heard() -> bool:
        return denylist.in_memory and await denylist.is_revoked("jti-after", None)

    await eventually(heard)
