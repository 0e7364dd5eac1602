"""The audit log: every domain event becomes one row, written by a subscriber to the event bus.

Followers (the live notifications) are handed each row once it is committed: whatever they tell
someone has its durable record first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from idp.events import Event, EventBus, EventContext
from idp.storage.db import Database
from idp.storage.repositories import AuditRepository

Follower = Callable[[Mapping[str, Any]], Awaitable[None]]


class AuditLogger:
    def __init__(self, db: Database, followers: Sequence[Follower] = ()) -> None:
        self._db = db
        self._followers = list(followers)

    def subscribe_to(self, bus: EventBus) -> None:
        bus.subscribe(self.record)

    def follow(self, follower: Follower) -> None:
        self._followers.append(follower)

    async def record(self, event: Event, context: EventContext) -> None:
        async with self._db.session() as session:
            entry = await AuditRepository(session).append(
                occurred_at=event.occurred_at,
                event=event.name,
                outcome=event.outcome,
                actor_id=context.actor_id,
                subject_id=event.subject_id,
                client_id=event.client_id,
                ip=context.ip,
                user_agent=(context.user_agent or "")[:512] or None,
                request_id=context.request_id,
                details={**event.details(), "via": context.via},
            )
            row = {
                "id": entry.id,
                "occurred_at": entry.occurred_at,
                "event": entry.event,
                "subject_id": entry.subject_id,
                "client_id": entry.client_id,
                "user_agent": entry.user_agent,
                "details": dict(entry.details or {}),
            }
        for follower in self._followers:
            await follower(row)
