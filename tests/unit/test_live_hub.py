"""The live notification hub without a server: an audit row published on one node reaches the
sockets of its user on every node (two hubs on one key-value backend: Redis when
IDP_TEST_REDIS_URL is set), only the user's own events go out, and a consumer that stops reading
is closed while its queue stays bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from idp.accounts.live.hub import CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, LiveHub, TooManyConnections, notification
from idp.storage.kv import KeyValueStore
from tests.unit.test_kv import BACKENDS, make_store, unique_prefix


def row(event: str = "session_ended", user: str = "u1", **details: Any) -> dict[str, Any]:
    return {
        "id": 42,
        "occurred_at": datetime(2026, 12, 1, 16, 0, tzinfo=UTC),
        "event": event,
        "subject_id": user,
        "client_id": None,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "details": {"sid": "s1", "reason": "logout", "via": "http", **details},
    }


@pytest.fixture(params=BACKENDS)
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    store = make_store(request.param, unique_prefix())
    yield store
    await store.close()


def test_a_notification_carries_no_more_than_the_activity_shows() -> None:
    message = notification(row(secret="never", password_hash="never"))
    assert message == {
        "type": "event",
        "id": 42,
        "event": "session_ended",
        "occurred_at": "2026-12-01T16:00:00Z",
        "data": {"sid": "s1", "reason": "logout", "device": "Firefox 120 on Linux"},
    }
    assert notification(row("token_issued")) is None  # not a user's notification
    assert notification(row(user="")) is None


async def test_an_event_on_one_node_reaches_the_users_sockets_on_every_node(kv: KeyValueStore) -> None:
    node_a = LiveHub(kv, max_per_user=5, queue_limit=10)
    node_b = LiveHub(kv, max_per_user=5, queue_limit=10)
    await node_a.start()
    await node_b.start()
    try:
        on_a, on_b, other = node_a.connect("u1"), node_b.connect("u1"), node_b.connect("u2")
        started = time.monotonic()
        await node_a.published(row())
        for connection in (on_a, on_b):
            message = json.loads(await asyncio.wait_for(connection.queue.get(), 5))
            assert message["event"] == "session_ended" and message["data"]["sid"] == "s1"
            assert connection.recheck.is_set()  # an ended session: the socket checks its token again
        assert time.monotonic() - started < 2
        assert other.queue.empty()
        await node_b.published(row("token_issued"))
        await node_b.published(row("password_changed", user="u2"))
        assert json.loads(await asyncio.wait_for(other.queue.get(), 5))["event"] == "password_changed"
        assert on_a.queue.empty() and on_b.queue.empty()
    finally:
        await node_a.stop()
        await node_b.stop()
    assert on_a.close_code == CLOSE_GOING_AWAY


async def test_a_consumer_that_stops_reading_is_closed_and_its_queue_stays_bounded(kv: KeyValueStore) -> None:
    node = LiveHub(kv, max_per_user=5, queue_limit=10)
    stuck = node.connect("u1")
    for _ in range(1000):
        node.deliver(json.dumps({"user": "u1", "message": {"type": "event", "event": "profile_updated"}}))
    assert stuck.queue.qsize() == 10  # never more than the limit held for it
    assert stuck.closing.is_set() and stuck.close_code == CLOSE_TOO_SLOW


async def test_sockets_per_user_are_capped_and_released(kv: KeyValueStore) -> None:
    node = LiveHub(kv, max_per_user=2, queue_limit=10)
    first, _ = node.connect("u1"), node.connect("u1")
    with pytest.raises(TooManyConnections):
        node.connect("u1")
    node.disconnect(first)
    node.connect("u1")
    assert node.connections == 2


async def test_an_unreadable_message_is_dropped(kv: KeyValueStore) -> None:
    node = LiveHub(kv, max_per_user=2, queue_limit=10)
    listener = node.connect("u1")
    for raw in ("not json", "[]", '{"user": "u1"}'):
        node.deliver(raw)
    assert listener.queue.empty() and not listener.closing.is_set()
