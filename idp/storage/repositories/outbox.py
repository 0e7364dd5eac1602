"""The outbox's rows: enqueue in the caller's transaction, claim what is due, record the outcome.

A claim is a compare-and-set on ``attempts``, so two claimers never both win a row; on
PostgreSQL the candidates are also read ``FOR UPDATE SKIP LOCKED``, so concurrent nodes take
different rows instead of waiting on each other. Every outcome is fenced by the claim (same
node, same attempt): a node whose lease ran out can't overwrite what the next holder did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from idp.storage.models import OutboxMessage

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"

# The session type resolvers receive, for modules that may not import SQLAlchemy themselves.
DbSession = AsyncSession

# Set on a session that inserted an outbox row; its commit wakes the worker (watch_commits).
_ENQUEUED = "idp_outbox_enqueued"


def watch_commits(engine: AsyncEngine, on_enqueued: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_enqueued`` after each commit on ``engine`` that inserted an outbox row; returns
    the unwatch. After the commit, not at it (the engine's "commit" event comes before the
    database's COMMIT): a worker woken earlier would not see the row yet."""
    target = engine.sync_engine

    def _after_commit(session: Session) -> None:
        if session.info.pop(_ENQUEUED, False) and session.bind is target:
            on_enqueued()

    def _after_rollback(session: Session) -> None:
        session.info.pop(_ENQUEUED, None)

    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_rollback", _after_rollback)

    def unwatch() -> None:
        event.remove(Session, "after_commit", _after_commit)
        event.remove(Session, "after_rollback", _after_rollback)

    return unwatch


@dataclass(frozen=True)
class Claimed:
    id: str
    kind: str
    payload: str
    attempts: int  # including this one


@dataclass(frozen=True)
class OutboxCount:
    kind: str
    status: str
    count: int
    oldest: datetime | None  # the oldest row's created_at


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, message: OutboxMessage) -> None:
        self.session.add(message)
        await self.session.flush()
        self.session.sync_session.info[_ENQUEUED] = True

    async def claim(
        self,
        *,
        node: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        skip_locked: bool,
        kinds: Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> list[Claimed]:
        """Take up to ``limit`` due messages for ``node`` until ``lease_until`` (counting an attempt),
        of ``kinds`` or with ``ids`` only when given."""
        query = (
            select(OutboxMessage.id, OutboxMessage.attempts)
            .where(OutboxMessage.status == PENDING, OutboxMessage.available_at <= now)
            .order_by(OutboxMessage.available_at)
            .limit(limit)
        )
        if kinds is not None:
            query = query.where(OutboxMessage.kind.in_(list(kinds)))
        if ids is not None:
            query = query.where(OutboxMessage.id.in_(list(ids)))
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        candidates = (await self.session.execute(query)).all()
        claimed: list[Claimed] = []
        for message_id, attempts in candidates:
            row = (
                await self.session.execute(
                    update(OutboxMessage)
                    .where(
                        OutboxMessage.id == message_id,
                        OutboxMessage.attempts == attempts,
                        OutboxMessage.status == PENDING,
                    )
                    .values(attempts=attempts + 1, locked_by=node, locked_until=lease_until, available_at=lease_until)
                    .returning(OutboxMessage.kind, OutboxMessage.payload)
                )
            ).first()
            if row is not None:
                claimed.append(Claimed(id=message_id, kind=row.kind, payload=row.payload, attempts=attempts + 1))
        return claimed

    async def _finish(self, claimed: Claimed, node: str, **values: Any) -> bool:
        result = await self.session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == claimed.id,
                OutboxMessage.locked_by == node,
                OutboxMessage.attempts == claimed.attempts,
                OutboxMessage.status == PENDING,
            )
            .values(locked_by=None, locked_until=None, **values)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def mark_delivered(self, claimed: Claimed, node: str, now: datetime) -> bool:
        """False when the claim was lost (the lease ran out and another node took the message)."""
        # The payload goes: a delivered message's links and addresses need not stay at rest.
        return await self._finish(claimed, node, status=DELIVERED, delivered_at=now, payload="", last_error=None)

    async def reschedule(self, claimed: Claimed, node: str, available_at: datetime, error: str) -> bool:
        return await self._finish(claimed, node, available_at=available_at, last_error=error[:200])

    async def bury(self, claimed: Claimed, node: str, now: datetime, error: str) -> bool:
        return await self._finish(claimed, node, status=DEAD, dead_at=now, last_error=error[:200])

    async def counts(self) -> list[OutboxCount]:
        rows = await self.session.execute(
            select(OutboxMessage.kind, OutboxMessage.status, func.count(), func.min(OutboxMessage.created_at)).group_by(
                OutboxMessage.kind, OutboxMessage.status
            )
        )
        return [
            OutboxCount(kind=kind, status=status, count=count, oldest=_aware(oldest))
            for kind, status, count, oldest in rows.all()
        ]

    async def dead_letters(self, limit: int = 100) -> list[OutboxMessage]:
        query = select(OutboxMessage).where(OutboxMessage.status == DEAD).order_by(OutboxMessage.dead_at).limit(limit)
        return list((await self.session.scalars(query)).all())

    async def get(self, message_id: str) -> OutboxMessage | None:
        return await self.session.get(OutboxMessage, message_id)

    async def revive(self, now: datetime, message_id: str | None = None) -> int:
        """Put dead letters (all, or the one ``message_id``) back in the queue, due now, with their
        attempts reset; returns how many."""
        query = update(OutboxMessage).where(OutboxMessage.status == DEAD)
        if message_id is not None:
            query = query.where(OutboxMessage.id == message_id)
        result = await self.session.execute(
            query.values(status=PENDING, attempts=0, available_at=now, dead_at=None, locked_by=None, locked_until=None)
        )
        return int(getattr(result, "rowcount", 0))

    async def hasten(self, now: datetime, kinds: Iterable[str] | None = None) -> int:
        """Make every pending message no node holds due now (tests: retries without the backoff)."""
        query = update(OutboxMessage).where(
            OutboxMessage.status == PENDING, OutboxMessage.locked_by.is_(None), OutboxMessage.available_at > now
        )
        if kinds is not None:
            query = query.where(OutboxMessage.kind.in_(list(kinds)))
        result = await self.session.execute(query.values(available_at=now))
        return int(getattr(result, "rowcount", 0))

    async def purge(self, *, delivered_before: datetime | None, dead: bool) -> tuple[int, int]:
        """Delete delivered messages older than ``delivered_before`` and, with ``dead``, every dead
        letter; returns (delivered, dead) counts."""
        delivered_count = dead_count = 0
        if delivered_before is not None:
            result = await self.session.execute(
                delete(OutboxMessage).where(
                    OutboxMessage.status == DELIVERED, OutboxMessage.delivered_at < delivered_before
                )
            )
            delivered_count = int(getattr(result, "rowcount", 0))
        if dead:
            result = await self.session.execute(delete(OutboxMessage).where(OutboxMessage.status == DEAD))
            dead_count = int(getattr(result, "rowcount", 0))
        return delivered_count, dead_count


def _aware(value: datetime | None) -> datetime | None:
    """min() takes the column's type, but be sure: a naive value is UTC (how SQLite keeps it)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
