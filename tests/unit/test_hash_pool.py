"""argon2id runs in a pool of its own (idp.security.passwords.PasswordHasher): low-priority threads,
so a burst of sign-ins can't take the event loop's core, and a bounded queue, so a burst beyond
what the pool can take is refused (HashPoolBusy: 503 with Retry-After) instead of waiting without
bound (issue 14)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from idp.config import PasswordHashSettings
from idp.security.passwords import HASH_THREAD_NICENESS, HashPoolBusy, PasswordHasher

FAST = PasswordHashSettings(time_cost=1, memory_cost_kib=7168, parallelism=1)


def own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_hashes_run_off_the_loop_in_threads_of_lower_priority() -> None:
    hasher = PasswordHasher(FAST, threads=2)
    try:
        loop_niceness = own_niceness()
        thread_niceness = await hasher._run(lambda: own_niceness())
        assert thread_niceness == loop_niceness + HASH_THREAD_NICENESS
        assert own_niceness() == loop_niceness  # the event loop's thread is left as it was
        stored = await hasher.hash("a password")
        assert await hasher.verify(stored, "a password") and not await hasher.verify(stored, "another")
    finally:
        hasher.close()


async def test_beyond_the_threads_and_the_queue_a_hash_is_refused_not_queued() -> None:
    hasher = PasswordHasher(FAST, threads=1, queue_limit=1)
    release = threading.Event()
    try:
        running = asyncio.ensure_future(hasher._run(release.wait))  # holds the one thread
        waiting = asyncio.ensure_future(hasher.hash("queued"))  # the one place in the queue
        await asyncio.sleep(0.05)
        assert hasher.in_flight == 2
        with pytest.raises(HashPoolBusy):
            await hasher.verify(None, "one too many")
        assert hasher.in_flight == 2  # the refused one took no place
        release.set()
        await running
        assert (await waiting).startswith("$argon2id$")
        assert hasher.in_flight == 0
        assert await hasher.verify(await hasher.hash("again"), "again")  # admitted again
    finally:
        release.set()
        hasher.close()
