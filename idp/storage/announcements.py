"""Announcements between processes that have no shared key-value store, through the database.

With the in-process store (the embedded default) every process keeps its own state, yet the
caches of a serving process must hear what another process changes: the command line disabling a
client, rotating a key or revoking a grant next to a running server (issue 14: without this the
embedded server could use none of its caches). :class:`DatabaseRelay` attaches to a
:class:`~idp.storage.kv.memory.MemoryStore`:

- what the store publishes is also written to the ``announcements`` table, in the background
  (``publish`` never waits on the database, so it can't deadlock behind a write transaction of the
  caller's own; ``close`` writes what is still waiting);
- a serving process reads the rows other processes wrote every ``poll_every`` seconds (0.2) and
  hands them to its listeners, as Redis delivers a message to its subscribers. When a read fails,
  the listeners end as they do when Redis goes away, so the caches behind them stop trusting what
  they hold until they are subscribed again;
- rows are deleted after ``keep_for`` seconds (KEEP_FOR, 60) by the serving processes, and by
  `idp db cleanup` (for the rows of processes that stopped serving).

An announcement lost anyway (a process that crashed before writing it) is bounded as with Redis,
by each cache's own re-read. The relay has an engine of its own, so its statements are neither
counted against nor queued behind a request's unit of work (SQLite writers of one process still
queue in one line, idp.storage.db).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.db import DATABASE_ERRORS, Database, DatabaseUnavailable
from idp.storage.kv.memory import MemoryStore
from idp.storage.models import Announcement, utcnow

log = logging.getLogger("idp.storage.announcements")

# Messages waiting to be written at most; beyond it the oldest are dropped (and logged).
_OUTGOING_LIMIT = 10_000
# A row whose id is below one already read may still commit later (PostgreSQL assigns ids before
# commit): ids are read again for this many seconds before the reader moves past them.
_LATE_COMMIT_GRACE = 2.0
_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *DATABASE_ERRORS)
# Seconds a row is kept: every serving process has read it long before (they read every 0.2 s).
KEEP_FOR = 60.0


async def delete_read(session: AsyncSession, now: datetime, keep_for: float = KEEP_FOR) -> int:
    """Delete the rows older than ``keep_for`` seconds (every process has read them); how many."""
    cutoff = now - timedelta(seconds=keep_for)
    deleted = await session.execute(delete(Announcement).where(Announcement.created_at < cutoff))
    return int(getattr(deleted, "rowcount", 0) or 0)


def relay_for(database_url: str, store: MemoryStore) -> DatabaseRelay | None:
    """A relay attached to ``store``, unless the database is a process' own (SQLite in memory)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return DatabaseRelay(database_url, store)


class DatabaseRelay:
    def __init__(
        self,
        database_url: str,
        store: MemoryStore,
        *,
        poll_every: float = 0.2,
        keep_for: float = KEEP_FOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = Database(database_url, pool_size=1)
        self._store = store
        self._poll_every = poll_every
        self._keep_for = keep_for
        self._clock = clock
        self.origin = secrets.token_hex(16)
        self._outgoing: list[tuple[str, str]] = []
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._hearing = False
        self._floor = 0  # every row up to this id has been handled
        self._seen: dict[int, float] = {}  # rows above the floor already handled, and when
        self._pruned_at = float("-inf")
        store.relay = self

    # -- publishing (every process) ----------------------------------------------------------------

    def send(self, channel_key: str, message: str) -> None:
        if len(self._outgoing) >= _OUTGOING_LIMIT:
            del self._outgoing[0]
            log.warning("announcement dropped: too many waiting to be written", extra={"limit": _OUTGOING_LIMIT})
        self._outgoing.append((channel_key, message))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting())

    async def _write_waiting(self) -> None:
        delay = 0.1
        while self._outgoing:
            batch = list(self._outgoing)
            try:
                await self._insert(batch)
            except _ERRORS as exc:
                log.warning("announcements not written yet", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            del self._outgoing[: len(batch)]
            delay = 0.1

    async def _insert(self, batch: list[tuple[str, str]]) -> None:
        at = utcnow()
        rows = [{"origin": self.origin, "channel": key, "message": text, "created_at": at} for key, text in batch]
        async with self._db.session() as session:
            await session.execute(insert(Announcement), rows)

    # -- hearing (serving processes) ---------------------------------------------------------------

    @property
    def hearing(self) -> bool:
        return self._hearing

    async def start(self) -> None:
        """Hear what other processes announce from now on (what they announced before concerns
        nothing this process holds yet). Reads start even if the database can't be reached now."""
        try:
            async with self._db.session() as session:
                self._floor = (await session.execute(select(func.max(Announcement.id)))).scalar() or 0
            self._hearing = True
        except _ERRORS as exc:
            log.warning("announcements from other processes not heard yet", extra={"error": type(exc).__name__})
        self._pruned_at = self._clock()  # the first pruning after keep_for / 2, as every later one
        self._reader = asyncio.create_task(self._read_forever())

    async def _read_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_every)
            try:
                await self.read()
            except Exception as exc:  # a database error, or a defect: deaf until a read succeeds
                if self._hearing:
                    level = logging.WARNING if isinstance(exc, _ERRORS) else logging.ERROR
                    error = type(exc).__name__
                    log.log(level, "announcements from other processes interrupted", extra={"error": error})
                    self._hearing = False
                    self._store.interrupt()

    async def read(self) -> None:
        """Hand the rows other processes wrote since the last read to this store's listeners."""
        query = (
            select(Announcement.id, Announcement.origin, Announcement.channel, Announcement.message)
            .where(Announcement.id > self._floor)
            .order_by(Announcement.id)
        )
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        if not self._hearing:
            self._hearing = True  # the listeners subscribe again on their own
            log.info("announcements from other processes heard again")
        now = self._clock()
        for row_id, origin, channel_key, message in rows:
            if row_id in self._seen:
                continue
            self._seen[row_id] = now
            if origin != self.origin:
                self._store.deliver(channel_key, message)
        settled = [row_id for row_id, at in self._seen.items() if now - at > _LATE_COMMIT_GRACE]
        if settled:
            self._floor = max(self._floor, *settled)
            self._seen = {row_id: at for row_id, at in self._seen.items() if row_id > self._floor}
        if now - self._pruned_at >= self._keep_for / 2:
            await self.prune()
            self._pruned_at = now

    async def prune(self) -> None:
        """Delete the rows older than ``keep_for``: every process has read them by then."""
        async with self._db.session() as session:
            await delete_read(session, utcnow(), self._keep_for)

    async def close(self, flush_within: float = 2.0) -> None:
        """Write what is still waiting (for up to ``flush_within`` seconds), stop reading, close."""
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), flush_within)
            if not self._writer.done():
                self._writer.cancel()
                log.warning("announcements not written before closing", extra={"waiting": len(self._outgoing)})
            self._writer = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._hearing = False
        self._store.relay = None
        await self._db.close()
