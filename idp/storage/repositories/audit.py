"""The audit log: appended by the audit subscriber, read by the activity pages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import AuditEvent


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(self, **fields: Any) -> AuditEvent:
        entry = AuditEvent(**fields)
        self.session.add(entry)
        await self.session.flush()
        return entry

    async def for_subject(self, subject_id: str, limit: int = 50) -> Sequence[AuditEvent]:
        result = await self.session.execute(
            select(AuditEvent)
            .where(AuditEvent.subject_id == subject_id)
            .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
            .limit(limit)
        )
        return result.scalars().all()

    async def recent(self, limit: int = 50) -> Sequence[AuditEvent]:
        result = await self.session.execute(
            select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit)
        )
        return result.scalars().all()
