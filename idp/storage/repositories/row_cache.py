"""Rows kept in memory per process, forgotten on every node the moment one of them changes: the
cache of the protocol endpoints' hot reads (issue 14), for clients (``client_cache``) and users
(``user_cache``).

A cached row is never a stale security decision for long:

- every committed change to a row calls :meth:`RowCache.changed`, which forgets it here at once
  and tells every other process sharing the key-value store on the cache's channel, so every node
  forgets it within milliseconds;
- while this process is not subscribed to that channel (starting, or the store went away) the
  cache is bypassed: every look-up reads the database, as if there were no cache;
- with the in-process key-value store (the embedded default) another process (the command line
  run beside the server) announces its changes through the database (idp.storage.announcements,
  read every 0.2 s); without that relay the cache is never used;
- an entry is also re-read after ``max_age`` seconds, a bound should an announcement be lost.

Unknown ids are not cached: anyone can send random ids, and they must not fill memory. A cached
row is detached from the session that read it with every column loaded: callers only read it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import ClassVar, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.db import Database
from idp.storage.kv import KeyValueError, KeyValueStore
from idp.storage.kv.subscription import Subscription

ALL = "*"  # the message that forgets every row

T = TypeVar("T")

log = logging.getLogger("idp.storage.cache")


class RowCache(Generic[T]):
    """Subclasses name their ``channel`` and how a row is read (``load``)."""

    channel: ClassVar[str]

    def __init__(
        self,
        db: Database,
        kv: KeyValueStore,
        *,
        max_age: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._kv = kv
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        # Bumped by every invalidation: a read that started before one must not store its result.
        self._generation = 0
        self._subscribed = False
        self._subscription: Subscription | None = None

    @staticmethod
    async def load(session: AsyncSession, key: str) -> T | None:
        """The row ``key`` as the database has it, or None."""
        raise NotImplementedError

    @property
    def active(self) -> bool:
        """Whether look-ups may be answered from memory (only while invalidations can arrive)."""
        return self._subscribed

    def in_memory(self, key: str) -> T | None:
        """The row if :meth:`get` would answer it from memory now, else None (nothing is read)."""
        if self._subscribed:
            cached = self._entries.get(key)
            if cached is not None and self._clock() - cached[0] < self._max_age:
                return cached[1]
        return None

    async def get(self, key: str) -> T | None:
        """The row, from memory when it may be, else read in a session of its own; or None."""
        if (row := self.in_memory(key)) is not None:
            self._entries.move_to_end(key)
            return row
        generation = self._generation
        async with self._db.session() as session:
            row = await self.load(session, key)
        if row is None:
            self._entries.pop(key, None)
        elif self._subscribed and generation == self._generation:
            self._entries[key] = (self._clock(), row)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return row

    def forget(self, key: str) -> None:
        """Forget one row (``ALL``: every row) in this process only."""
        self._generation += 1
        if key == ALL:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    async def changed(self, key: str) -> None:
        """A row changed (committed): forget it here and on every other node."""
        await self.changed_many((key,))

    async def changed_many(self, keys: Iterable[str]) -> None:
        """Rows changed (committed): forget them here and on every other node."""
        keys = sorted(set(keys))
        for key in keys:
            self.forget(key)
        try:
            for key in keys:
                await self._kv.publish(self.channel, key)
        except KeyValueError as exc:
            # The other nodes are deaf too, then (their subscription failed the same way), so
            # they bypass their caches until they hear again.
            log.warning("could not announce a change", extra={"channel": self.channel, "error": type(exc).__name__})

    # -- the subscription (serving processes) ----------------------------------------------------

    async def start(self) -> None:
        """Subscribe; return once subscribed (the cache is used from then on). Only where what
        every process publishes reaches this one: an in-process store without the database's
        announcements relay can't tell of changes another process (the command line) makes."""
        if not self._kv.shared:
            return
        self._subscription = Subscription(
            self._kv,
            self.channel,
            self._heard,
            what="change announcements",
            on_subscribed=self._hearing,
            on_lost=self._deaf,
        )
        await self._subscription.start()

    async def _heard(self, key: str) -> None:
        self.forget(key)

    def _hearing(self) -> None:
        self.forget(ALL)  # anything cached before may have changed unheard
        self._subscribed = True

    def _deaf(self) -> None:
        # Whatever changes until subscribed again goes unheard: bypass the cache meanwhile.
        self._subscribed = False
        self.forget(ALL)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        self._deaf()
