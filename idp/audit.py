"""The audit log: every domain event becomes one row, written by a subscriber to the event bus.

Followers (the live notifications) are handed each row once it is committed: whatever they tell
someone has its durable record first.

Security events (sign-ins and their failures, account and admin actions, revocations) are written
before the use case that published them goes on: in its transaction when it publishes within one
(idp.events.Transaction), else in one of their own. The high-volume ones no person acts on — tokens
issued by the ``client_credentials`` and ``refresh_token`` grants, hundreds a second under load —
are written in batches off the request path (issue 14: the inline insert was 14 % of a worker's
time): a bounded queue, one insert per batch, and nothing dropped — a full queue writes
synchronously again, a failed batch is retried, and closing the logger writes what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from idp.events import Event, EventBus, EventContext, TokenIssued, current_transaction
from idp.storage.db import DATABASE_ERRORS, Database, DatabaseUnavailable
from idp.storage.repositories import AuditRepository

Follower = Callable[[Mapping[str, Any]], Awaitable[None]]

# Grants whose issued tokens are audited in batches (every other event is written at once).
BATCHED_GRANTS = frozenset({"client_credentials", "refresh_token"})

# A batch that fails with one of these stays queued and is retried.
_RETRIED: tuple[type[BaseException], ...] = (DatabaseUnavailable, *DATABASE_ERRORS)

log = logging.getLogger("idp.audit")


def is_high_volume(event: Event) -> bool:
    return isinstance(event, TokenIssued) and event.grant_type in BATCHED_GRANTS


def _fields(event: Event, context: EventContext) -> dict[str, Any]:
    return {
        "occurred_at": event.occurred_at,
        "event": event.name,
        "outcome": event.outcome,
        "actor_id": context.actor_id,
        "subject_id": event.subject_id,
        "client_id": event.client_id,
        "ip": context.ip,
        "user_agent": (context.user_agent or "")[:512] or None,
        "request_id": context.request_id,
        "details": {**event.details(), "via": context.via},
    }


def _row(entry_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    """What a follower is handed: the committed row, with its id."""
    return {
        "id": entry_id,
        "occurred_at": fields["occurred_at"],
        "event": fields["event"],
        "subject_id": fields["subject_id"],
        "client_id": fields["client_id"],
        "user_agent": fields["user_agent"],
        "details": dict(fields["details"] or {}),
    }


class AuditLogger:
    def __init__(
        self,
        db: Database,
        followers: Sequence[Follower] = (),
        *,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        queue_limit: int = 20_000,
        retry_delay: float = 1.0,
    ) -> None:
        self._db = db
        self._followers = list(followers)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue_limit = queue_limit
        self._retry_delay = retry_delay
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def subscribe_to(self, bus: EventBus) -> None:
        bus.subscribe(self.record)

    def follow(self, follower: Follower) -> None:
        self._followers.append(follower)

    @property
    def queued(self) -> int:
        """Rows accepted but not yet committed."""
        return len(self._pending)

    async def record(self, event: Event, context: EventContext) -> None:
        fields = _fields(event, context)
        if is_high_volume(event) and not self._closed and len(self._pending) < self._queue_limit:
            self._pending.append(fields)
            self._idle.clear()
            self._wake.set()
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write_batches())
            return
        # Everything else, and the high-volume ones when the queue is full (back-pressure, never
        # a dropped row) or the logger is closing: in the publisher's transaction when it gave one
        # (the row commits with what it records), else in a transaction of its own.
        if (transaction := current_transaction()) is not None:
            entry = await AuditRepository(transaction.session).append(**fields)
            rows = [_row(entry.id, fields)]
            transaction.after_commit(lambda: self._tell_followers(rows))
            return
        async with self._db.session() as session:
            entry = await AuditRepository(session).append(**fields)
            row = _row(entry.id, fields)
        await self._tell_followers([row])

    async def _write_batches(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < self._batch_size and not self._closed:
                # Let a batch gather: one insert for everything issued in this interval.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full_batch(), self._flush_interval)
            batch = self._pending[: self._batch_size]
            try:
                rows = await self._insert(batch)
            except _RETRIED as exc:
                # Kept queued (bounded: a full queue writes synchronously), retried shortly.
                log.error("audit batch not written, retrying", extra={"rows": len(batch), "error": type(exc).__name__})
                if self._closed:
                    return
                await asyncio.sleep(self._retry_delay)
                continue
            del self._pending[: len(batch)]
            await self._tell_followers(rows)

    async def _full_batch(self) -> None:
        while len(self._pending) < self._batch_size and not self._closed:
            self._wake.clear()
            await self._wake.wait()

    async def _insert(self, batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        async with self._db.session() as session:
            ids = await AuditRepository(session).append_many(batch)
        return [_row(entry_id, fields) for entry_id, fields in zip(ids, batch, strict=True)]

    async def _tell_followers(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            for follower in self._followers:
                await follower(row)

    async def flush(self, within: float = 10.0) -> None:
        """Wait until every queued row is committed (tests; shutdown)."""
        if self._pending:
            self._wake.set()
            await asyncio.wait_for(self._idle.wait(), within)

    async def close(self, within: float = 10.0) -> None:
        """Write what is queued, then stop: a clean shutdown loses no row."""
        self._closed = True
        self._wake.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), within)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if self._pending:
            # The writer gave up (the database is down): the rows are lost, and the log says so.
            log.error("audit rows not written at shutdown", extra={"rows": len(self._pending)})
            self._pending.clear()
        self._idle.set()
