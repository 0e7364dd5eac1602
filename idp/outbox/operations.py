"""What an operator (or the metrics) asks of the outbox: queue depth by kind and state, the oldest
pending message's age, the dead letters; and putting dead letters back or purging old rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from idp.storage.db import Database
from idp.storage.models import utcnow
from idp.storage.repositories.outbox import DEAD, DELIVERED, PENDING, OutboxRepository

STATUSES = (PENDING, DELIVERED, DEAD)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    kind: str
    attempts: int
    last_error: str | None
    created_at: datetime
    dead_at: datetime | None


@dataclass(frozen=True)
class OutboxStats:
    # kind -> status -> count
    counts: dict[str, dict[str, int]]
    oldest_pending_age: float | None  # seconds, None when nothing is pending
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def total(self, status: str) -> int:
        return sum(by_status.get(status, 0) for by_status in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "pending": self.total(PENDING),
            "delivered": self.total(DELIVERED),
            "dead": self.total(DEAD),
            "oldest_pending_age": self.oldest_pending_age,
            "dead_letters": [
                {
                    "id": letter.id,
                    "kind": letter.kind,
                    "attempts": letter.attempts,
                    "last_error": letter.last_error,
                    "created_at": letter.created_at.isoformat(),
                    "dead_at": letter.dead_at.isoformat() if letter.dead_at else None,
                }
                for letter in self.dead_letters
            ],
        }


async def outbox_stats(db: Database, *, now: datetime | None = None, dead_letters: int = 0) -> OutboxStats:
    """Counts by kind and status and the oldest pending message's age (one grouped query); with
    ``dead_letters``, up to that many dead letters, oldest first (no payload: ids, kinds, errors)."""
    now = now or utcnow()
    async with db.session() as session:
        repo = OutboxRepository(session)
        rows = await repo.counts()
        dead = await repo.dead_letters(dead_letters) if dead_letters else []
    counts: dict[str, dict[str, int]] = {}
    oldest: datetime | None = None
    for row in rows:
        counts.setdefault(row.kind, dict.fromkeys(STATUSES, 0))[row.status] = row.count
        if row.status == PENDING and row.oldest is not None and (oldest is None or row.oldest < oldest):
            oldest = row.oldest
    return OutboxStats(
        counts=counts,
        oldest_pending_age=max(0.0, (now - oldest).total_seconds()) if oldest is not None else None,
        dead_letters=[
            DeadLetter(
                id=row.id,
                kind=row.kind,
                attempts=row.attempts,
                last_error=row.last_error,
                created_at=row.created_at,
                dead_at=row.dead_at,
            )
            for row in dead
        ],
    )


async def retry_dead(db: Database, message_id: str | None = None) -> int:
    """Put every dead letter (or the one ``message_id``) back in the queue, due now with its
    attempts reset; returns how many."""
    async with db.session() as session:
        return await OutboxRepository(session).revive(utcnow(), message_id)


async def purge(db: Database, *, delivered_before_days: float | None, dead: bool) -> tuple[int, int]:
    """Delete delivered messages older than ``delivered_before_days`` days and, with ``dead``,
    every dead letter; returns (delivered, dead) counts. Pending messages are never purged."""
    cutoff = utcnow() - timedelta(days=delivered_before_days) if delivered_before_days is not None else None
    async with db.session() as session:
        return await OutboxRepository(session).purge(delivered_before=cutoff, dead=dead)
