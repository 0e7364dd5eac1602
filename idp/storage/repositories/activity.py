"""A user's own activity: the audit events about them, as the activity pages and the export read them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import AuditEvent


class ActivityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, user_id: str, *, limit: int, before: int | None = None) -> tuple[Sequence[AuditEvent], bool]:
        """Up to ``limit`` events about the user, newest first, older than event ``before`` if given
        (ids only grow); and whether there are more."""
        query = select(AuditEvent).where(AuditEvent.subject_id == user_id)
        if before is not None:
            query = query.where(AuditEvent.id < before)
        rows = (await self.session.execute(query.order_by(AuditEvent.id.desc()).limit(limit + 1))).scalars().all()
        return rows[:limit], len(rows) > limit

    async def everything(self, user_id: str) -> Sequence[AuditEvent]:
        """Every event about the user, oldest first."""
        query = select(AuditEvent).where(AuditEvent.subject_id == user_id).order_by(AuditEvent.id)
        return (await self.session.execute(query)).scalars().all()
