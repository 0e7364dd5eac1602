"""Waiting for a node's row cache to be up to date with what was announced so far.

A node hears its own announcements too (every commit to a cached table publishes the row's key),
so right after a test's set-up wrote something, the echo of that write may still be on its way
and forget a row the test has just seen cached. Tests that look at what is cached first wait
until the cache has heard a marker published after everything else: announcements on one channel
arrive in the order they were published."""

from __future__ import annotations

import asyncio
import uuid

from idp.storage.repositories.row_cache import RowCache


async def heard_so_far(cache: RowCache[object], within: float = 2.0) -> None:
    subscription = cache._subscription
    assert subscription is not None and cache.active, "the cache is not subscribed"
    marker = f"marker-{uuid.uuid4().hex}"
    heard = asyncio.Event()
    on_message = subscription._on_message

    async def watching(message: str) -> None:
        await on_message(message)
        if message == marker:
            heard.set()

    subscription._on_message = watching
    try:
        await cache._kv.publish(cache.channel, marker)
        await asyncio.wait_for(heard.wait(), within)
    finally:
        subscription._on_message = on_message
