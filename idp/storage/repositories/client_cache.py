"""Registered clients kept in memory, so the token, introspection and revocation endpoints don't
read the client's row on every request (issue 14: the re-read was 14 % of a worker's time).

A cached client is never a stale security decision for long:

- every change to a client (``idp.oauth.clients``: created, updated, secret rotated, disabled,
  enabled, deleted) calls :meth:`ClientCache.changed` after it is committed, which forgets the
  client here at once and tells every other process sharing the key-value store on the
  ``clients_changed`` channel, so a disabled client or a rotated secret is refused on every node
  within milliseconds;
- while this process is not subscribed to that channel (starting, or the store went away) the
  cache is bypassed: every lookup reads the database, as before the cache existed;
- with the in-process key-value store (the embedded default) no other process can announce a
  change (an ``idp clients disable`` run beside the server), so there the cache is never used;
- an entry is also re-read after ``max_age`` seconds, a bound should an announcement be lost.

Unknown client ids are not cached: anyone can send random ids, and they must not fill memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from idp.storage.db import Database
from idp.storage.kv import KeyValueError, KeyValueStore
from idp.storage.models import OAuthClient
from idp.storage.repositories.clients import ClientRepository

CHANNEL = "clients_changed"
ALL = "*"  # the message that forgets every client

log = logging.getLogger("idp.clients")


class ClientCache:
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
        self._entries: OrderedDict[str, tuple[float, OAuthClient]] = OrderedDict()
        # Bumped by every invalidation: a read that started before one must not store its result.
        self._generation = 0
        self._subscribed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """Whether lookups may be answered from memory (only while invalidations can arrive)."""
        return self._subscribed

    async def get(self, client_id: str) -> OAuthClient | None:
        """The registered client (disabled ones included: callers decide), or None."""
        if self._subscribed:
            cached = self._entries.get(client_id)
            if cached is not None and self._clock() - cached[0] < self._max_age:
                self._entries.move_to_end(client_id)
                return cached[1]
        generation = self._generation
        async with self._db.session() as session:
            client = await ClientRepository(session).get(client_id)
        if client is None:
            self._entries.pop(client_id, None)
        elif self._subscribed and generation == self._generation:
            # Detached from its (closed) session with every column loaded: callers only read it.
            self._entries[client_id] = (self._clock(), client)
            self._entries.move_to_end(client_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return client

    def forget(self, client_id: str) -> None:
        """Forget one client (``ALL``: every client) in this process only."""
        self._generation += 1
        if client_id == ALL:
            self._entries.clear()
        else:
            self._entries.pop(client_id, None)

    async def changed(self, client_id: str) -> None:
        """A client's registration changed (committed): forget it here and on every other node."""
        self.forget(client_id)
        try:
            await self._kv.publish(CHANNEL, client_id)
        except KeyValueError as exc:
            # The other nodes are deaf too, then (their subscription failed the same way), so
            # they bypass their caches until they hear again.
            log.warning("could not announce a client change", extra={"error": type(exc).__name__})

    # -- the subscription (serving processes) ----------------------------------------------------

    async def start(self) -> None:
        """Subscribe; return once subscribed (the cache is used from then on). Only where the
        key-value store is shared between processes: the in-process one can't tell of changes
        that another process (the command line) makes."""
        if self._kv.backend_name == "memory":
            return
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(ready))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), 5)

    async def _listen(self, ready: asyncio.Event) -> None:
        delay = 0.5
        while True:
            subscribed = asyncio.Event()
            flag = asyncio.create_task(self._use_once_subscribed(subscribed, ready))
            try:
                async for client_id in self._kv.listen(CHANNEL, subscribed):
                    delay = 0.5
                    self.forget(client_id)
            except KeyValueError as exc:
                log.warning("client change announcements interrupted", extra={"error": type(exc).__name__})
            finally:
                # Deaf from here until subscribed again: whatever changes meanwhile goes unheard.
                flag.cancel()
                self._subscribed = False
                self.forget(ALL)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _use_once_subscribed(self, subscribed: asyncio.Event, ready: asyncio.Event) -> None:
        await subscribed.wait()
        self.forget(ALL)  # anything cached before may have changed unheard
        self._subscribed = True
        ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._subscribed = False
        self.forget(ALL)
