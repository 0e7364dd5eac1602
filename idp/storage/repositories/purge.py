"""Deleting an account: its rows (every user-owned table references ``users.id`` ``ON DELETE
CASCADE``) and the personal data in the audit trail, which keeps its events and opaque ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import AuditEvent, Base, User


def user_owned_tables() -> list[tuple[str, list[Column[Any]]]]:
    """Tables whose rows cascade away with a user, each with its columns referencing users.id."""
    users = User.__table__
    found: list[tuple[str, list[Column[Any]]]] = []
    for table in Base.metadata.sorted_tables:
        columns = [
            fk.parent
            for fk in table.foreign_keys
            if fk.column.table is users and (fk.ondelete or "").upper() == "CASCADE"
        ]
        if columns:
            found.append((table.name, columns))
    return found


class AccountPurge:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def delete_everything_of(self, user_id: str) -> dict[str, int] | None:
        """Delete the ``users`` row and, by cascade, every row the user owns; rows per table
        (``users`` is 1), counted in this transaction. None when the account was gone already
        (deleted meanwhile by another request): the caller rolls the transaction back."""
        counts: dict[str, int] = {}
        for name, columns in user_owned_tables():
            table = columns[0].table
            query = select(func.count()).select_from(table).where(or_(*(column == user_id for column in columns)))
            counts[name] = int((await self.session.execute(query)).scalar_one())
        result = await self.session.execute(delete(User).where(User.id == user_id))
        if getattr(result, "rowcount", 0) != 1:
            return None
        counts[User.__tablename__] = 1
        return counts

    async def scrub_audit_trail(self, user_id: str, scrub_details: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
        """Keep each event about or by the user, its time, outcome and opaque ids; drop the IP
        address and user agent of the user's own requests, and pass the details of every such
        event through ``scrub_details``. How many events changed.

        The IP address and user agent are the user's when the user acted (``actor_id``) or the
        event is about them with no other actor; when an administrator acted on the account they
        are the administrator's, kept for accountability.
        """
        mine = or_(AuditEvent.subject_id == user_id, AuditEvent.actor_id == user_id)
        own_request = or_(
            AuditEvent.actor_id == user_id, (AuditEvent.subject_id == user_id) & AuditEvent.actor_id.is_(None)
        )
        has_request_data = or_(AuditEvent.ip.is_not(None), AuditEvent.user_agent.is_not(None))
        touched: set[int] = set()
        touched.update(
            (await self.session.execute(select(AuditEvent.id).where(own_request, has_request_data))).scalars()
        )
        await self.session.execute(
            update(AuditEvent).where(own_request, has_request_data).values(ip=None, user_agent=None)
        )
        rows = await self.session.execute(select(AuditEvent.id, AuditEvent.details).where(mine))
        for row_id, details in rows.all():
            clean = scrub_details(details or {})
            if clean != details:
                await self.session.execute(update(AuditEvent).where(AuditEvent.id == row_id).values(details=clean))
                touched.add(row_id)
        return len(touched)
