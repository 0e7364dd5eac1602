"""One channel listened to for the life of a serving process (``KeyValueStore.listen``), subscribed
again after the store goes away: 0.5 s after a failure, doubling up to 10 s, back to 0.5 s once a
message arrives. The row caches, the live-notification hub and the signing keys each keep one.

Whatever is published while a node is not subscribed never reaches it, so a listener says what it
does when it becomes deaf (``on_lost``: stop trusting a cache, close the sockets that relied on it)
and when it hears again (``on_subscribed``: start trusting it, from a clean slate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from idp.storage.kv.base import KeyValueError, KeyValueStore

log = logging.getLogger("idp.storage.kv")

_FIRST_RETRY = 0.5
_LONGEST_RETRY = 10.0


def _nothing() -> None:
    return None


class Subscription:
    def __init__(
        self,
        kv: KeyValueStore,
        channel: str,
        on_message: Callable[[str], Awaitable[None]],
        *,
        what: str,
        on_subscribed: Callable[[], None] = _nothing,
        on_lost: Callable[[], None] = _nothing,
    ) -> None:
        self._kv = kv
        self.channel = channel
        self._on_message = on_message
        self._what = what  # for the log line when the subscription breaks ("live notifications")
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = 5.0) -> None:
        """Subscribe in the background; return once subscribed, or after `wait` seconds (the
        subscription keeps trying, and ``on_subscribed`` runs when it succeeds)."""
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), wait)

    async def stop(self) -> None:
        """Unsubscribe. ``on_lost`` is not called: the owner is stopping and cleans up itself."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, ready: asyncio.Event) -> None:
        delay = _FIRST_RETRY
        while True:
            subscribed = asyncio.Event()
            # listen() sets `subscribed` before its first message, which may be hours away.
            flag = asyncio.create_task(self._when_subscribed(subscribed, ready))
            lost = True
            try:
                async for message in self._kv.listen(self.channel, subscribed):
                    delay = _FIRST_RETRY
                    await self._on_message(message)
            except KeyValueError as exc:
                log.warning(f"{self._what} interrupted", extra={"channel": self.channel, "error": type(exc).__name__})
            except asyncio.CancelledError:
                lost = False
                raise
            except Exception as exc:  # a defect in the owner: never deaf for good because of it
                log.error(f"{self._what} failed", extra={"channel": self.channel, "error": type(exc).__name__})
            finally:
                flag.cancel()
                if lost:  # deaf from here until subscribed again
                    self._on_lost()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LONGEST_RETRY)

    async def _when_subscribed(self, subscribed: asyncio.Event, ready: asyncio.Event) -> None:
        await subscribed.wait()
        self._on_subscribed()
        ready.set()
