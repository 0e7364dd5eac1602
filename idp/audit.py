"""The audit log: every domain event becomes one row, written by a subscriber to the event bus."""

from __future__ import annotations

from idp.events import Event, EventBus, EventContext
from idp.storage.db import Database
from idp.storage.repositories import AuditRepository


class AuditLogger:
    def __init__(self, db: Database) -> None:
        self._db = db

    def subscribe_to(self, bus: EventBus) -> None:
        bus.subscribe(self.record)

    async def record(self, event: Event, context: EventContext) -> None:
        async with self._db.session() as session:
            await AuditRepository(session).append(
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
