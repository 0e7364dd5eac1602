"""idp.storage.kv.subscription: a channel listened to for a serving process' life, subscribed
again after the store goes away, telling its owner when it becomes deaf and when it hears again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from idp.storage.kv import KeyValueUnavailable, MemoryStore
from idp.storage.kv import subscription as module
from idp.storage.kv.subscription import Subscription

BROKEN = "\x00broken"


class FlakyStore(MemoryStore):
    """A memory store whose subscriptions can be broken, as a Redis restart breaks them."""

    def __init__(self) -> None:
        super().__init__("t:")
        self.subscriptions = 0
        self.refuse = 0  # the next `refuse` subscribe attempts fail at once
        self._queues: set[asyncio.Queue[str]] = set()

    def break_subscriptions(self) -> None:
        for queue in self._queues:
            queue.put_nowait(BROKEN)

    async def publish(self, channel: str, message: str) -> None:
        for queue in self._queues:
            queue.put_nowait(message)

    async def listen(self, channel: str, ready: asyncio.Event | None = None) -> AsyncIterator[str]:
        if self.refuse:
            self.refuse -= 1
            raise KeyValueUnavailable("redis down (test)")
        self.subscriptions += 1
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._queues.add(queue)
        if ready is not None:
            ready.set()
        try:
            while True:
                message = await queue.get()
                if message == BROKEN:
                    raise KeyValueUnavailable("connection lost (test)")
                yield message
        finally:
            self._queues.discard(queue)


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_FIRST_RETRY", 0.01)
    monkeypatch.setattr(module, "_LONGEST_RETRY", 0.04)


async def _until(condition: Any) -> None:
    """Poll for up to 2 s: the subscription runs in a task of its own."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached within 2 s")


class Owner:
    def __init__(self) -> None:
        self.heard: list[str] = []
        self.events: list[str] = []

    async def on_message(self, message: str) -> None:
        self.heard.append(message)

    def subscription(self, kv: FlakyStore) -> Subscription:
        return Subscription(
            kv,
            "changes",
            self.on_message,
            what="test announcements",
            on_subscribed=lambda: self.events.append("hearing"),
            on_lost=lambda: self.events.append("deaf"),
        )


async def test_start_returns_subscribed_and_messages_arrive() -> None:
    kv, owner = FlakyStore(), Owner()
    subscription = owner.subscription(kv)
    await subscription.start()
    try:
        assert owner.events == ["hearing"]
        await kv.publish("changes", "client-1")
        await _until(lambda: owner.heard == ["client-1"])
    finally:
        await subscription.stop()


async def test_a_broken_subscription_tells_the_owner_and_subscribes_again(caplog: Any) -> None:
    kv, owner = FlakyStore(), Owner()
    subscription = owner.subscription(kv)
    await subscription.start()
    try:
        kv.refuse = 2  # the store stays down for two more attempts
        kv.break_subscriptions()
        await _until(lambda: kv.subscriptions == 2)
        await _until(lambda: owner.events == ["hearing", "deaf", "deaf", "deaf", "hearing"])
        await kv.publish("changes", "after")
        await _until(lambda: owner.heard == ["after"])
        warnings = [r for r in caplog.records if r.getMessage() == "test announcements interrupted"]
        assert len(warnings) == 3
        assert {r.channel for r in warnings} == {"changes"}
        assert {r.error for r in warnings} == {"KeyValueUnavailable"}
    finally:
        await subscription.stop()


async def test_a_store_down_at_start_is_retried_in_the_background() -> None:
    kv, owner = FlakyStore(), Owner()
    kv.refuse = 1_000_000
    subscription = owner.subscription(kv)
    await subscription.start(wait=0.1)  # returns after the wait, still trying
    try:
        assert "hearing" not in owner.events
        kv.refuse = 0
        await _until(lambda: owner.events[-1:] == ["hearing"])
    finally:
        await subscription.stop()


async def test_stopping_is_not_being_lost() -> None:
    kv, owner = FlakyStore(), Owner()
    subscription = owner.subscription(kv)
    await subscription.start()
    await subscription.stop()
    assert owner.events == ["hearing"]  # the owner cleans up itself; no "deaf" on the way out
    await kv.publish("changes", "unheard")
    await asyncio.sleep(0.05)
    assert owner.heard == []


async def test_an_error_of_the_owner_is_logged_and_the_subscription_goes_on(caplog: Any) -> None:
    kv, owner = FlakyStore(), Owner()

    async def fragile(message: str) -> None:
        if message == "boom":
            raise RuntimeError("a defect in the owner, with a secret: hunter2")
        owner.heard.append(message)

    subscription = Subscription(
        kv,
        "changes",
        fragile,
        what="test announcements",
        on_subscribed=lambda: owner.events.append("hearing"),
        on_lost=lambda: owner.events.append("deaf"),
    )
    await subscription.start()
    try:
        await kv.publish("changes", "boom")
        await _until(lambda: owner.events == ["hearing", "deaf", "hearing"])  # a cache stops trusting itself
        await kv.publish("changes", "fine")
        await _until(lambda: owner.heard == ["fine"])
        failures = [r for r in caplog.records if r.getMessage() == "test announcements failed"]
        assert [r.error for r in failures] == ["RuntimeError"]
        assert "hunter2" not in caplog.text
        assert "Traceback" not in caplog.text
    finally:
        await subscription.stop()
