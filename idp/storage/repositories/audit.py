"""The audit log: appended by the audit subscriber, read by the activity pages and by administrators."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import AuditEvent
from idp.storage.repositories.core_rows import table_of

APPEND_PAGE = 100  # rows an INSERT of append_many carries
_TABLE = table_of(AuditEvent)


@dataclass(frozen=True)
class AuditFilter:
    """Which events: each field optional; ``since`` inclusive, ``until`` exclusive."""

    subject_id: str | None = None
    client_id: str | None = None
    event: str | None = None
    # Any of these events (with ``event``, both must hold).
    events: tuple[str, ...] = ()
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(query: Select[Any], where: AuditFilter) -> Select[Any]:
    for column, value in (
        (AuditEvent.subject_id, where.subject_id),
        (AuditEvent.client_id, where.client_id),
        (AuditEvent.event, where.event),
        (AuditEvent.outcome, where.outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.events:
        query = query.where(AuditEvent.event.in_(where.events))
    if where.since is not None:
        query = query.where(AuditEvent.occurred_at >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.occurred_at < where.until)
    return query


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(self, **fields: Any) -> AuditEvent:
        entry = AuditEvent(**fields)
        self.session.add(entry)
        await self.session.flush()
        return entry

    async def append_many(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert a batch of rows (each with the same columns); their ids, in order. Plain INSERTs
        of ``APPEND_PAGE`` rows each, not ORM objects: about half the CPU, and the event loop runs
        between the statements (a batch of 500 ORM rows stalled it for tens of milliseconds)."""
        if not rows:
            return []
        if self.session.get_bind().dialect.name == "sqlite":
            # Asked to return ids in the rows' order, SQLAlchemy sends SQLite one row a statement
            # (its RETURNING rows come in no set order): 500 rows took 110 ms, and a worker issuing
            # 2,000 tokens a second filled the queue in ten seconds (issue 14). The ids of a rowid
            # table's INSERT are each the largest so far plus one, given in the order the VALUES
            # rows are inserted, so the sorted ids of each statement are the rows' ids in order.
            statement = insert(_TABLE).returning(_TABLE.c.id).execution_options(insertmanyvalues_page_size=APPEND_PAGE)
            return sorted((await self.session.execute(statement, list(rows))).scalars())
        statement = (
            insert(AuditEvent)
            .returning(AuditEvent.id, sort_by_parameter_order=True)
            .execution_options(insertmanyvalues_page_size=APPEND_PAGE)
        )
        return list((await self.session.execute(statement, list(rows))).scalars())

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

    async def newest(
        self, where: AuditFilter, *, before_id: int | None = None, limit: int = 50
    ) -> Sequence[AuditEvent]:
        """Matching events newest first (by id, which only grows), those before ``before_id``."""
        query = _filtered(select(AuditEvent), where)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        return (await self.session.execute(query.order_by(AuditEvent.id.desc()).limit(limit))).scalars().all()

    async def oldest(
        self, where: AuditFilter, *, after_id: int | None = None, limit: int = 500
    ) -> Sequence[AuditEvent]:
        """Matching events oldest first, those after ``after_id`` (an export's or a tail's next batch)."""
        query = _filtered(select(AuditEvent), where)
        if after_id is not None:
            query = query.where(AuditEvent.id > after_id)
        return (await self.session.execute(query.order_by(AuditEvent.id).limit(limit))).scalars().all()

    async def hourly_counts(self, events: Sequence[str], since: datetime) -> list[tuple[str, str, int]]:
        """(hour, event, count) of these events since ``since``, the hour as "YYYY-MM-DD HH" (UTC),
        counted by the database: a day of sign-ins is never loaded row by row."""
        bind = self.session.get_bind()
        if bind.dialect.name == "postgresql":
            in_utc = func.timezone("UTC", AuditEvent.occurred_at)
            hour = func.to_char(func.date_trunc("hour", in_utc), "YYYY-MM-DD HH24")
        else:
            hour = func.strftime("%Y-%m-%d %H", AuditEvent.occurred_at)
        query = (
            select(hour, AuditEvent.event, func.count())
            .where(AuditEvent.event.in_(list(events)), AuditEvent.occurred_at >= since)
            .group_by(hour, AuditEvent.event)
        )
        return [(str(h), str(e), int(n)) for h, e, n in (await self.session.execute(query)).all()]
