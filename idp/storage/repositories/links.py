"""Single-use, expiring links sent by email (``one_time_tokens``), known by their digest.

Consumption is one conditional UPDATE, so of two requests racing with the same link exactly one
gets its row."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import OneTimeToken
from idp.storage.repositories.users import UserRepository


class LinkRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def issue(self, row: OneTimeToken) -> None:
        """Store a new link; the user's unused links of the same purpose stop working (only the
        newest email works).

        The user's row is held first, so concurrent requests for a link take turns: each one's
        DELETE sees the links committed before it. Without it (PostgreSQL, READ COMMITTED) every
        overlapping request deleted only what was there when they all started, and 19 of 20 links
        asked for at once stayed usable."""
        await UserRepository(self.session).lock(row.user_id)
        await self.session.execute(
            delete(OneTimeToken).where(
                OneTimeToken.user_id == row.user_id,
                OneTimeToken.purpose == row.purpose,
                OneTimeToken.used_at.is_(None),
            )
        )
        self.session.add(row)

    async def add(self, row: OneTimeToken) -> None:
        """Store a link of a user who has none yet (a new account's): inserted when the transaction
        commits, with its other rows."""
        self.session.add(row)

    async def peek(self, digest: str) -> OneTimeToken | None:
        """The row, used or not, without consuming it."""
        return await self.session.get(OneTimeToken, digest)

    async def consume(self, digest: str, purpose: str, now: datetime) -> OneTimeToken | None:
        """Mark the link used, if it is an unused, unexpired link for ``purpose``: its row for
        exactly one caller, None for every other."""
        result = await self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.digest == digest,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > now,
            )
            .values(used_at=now)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        return (await self.session.execute(select(OneTimeToken).where(OneTimeToken.digest == digest))).scalar_one()

    async def cancel_unused(self, user_id: str, purposes: Iterable[str]) -> None:
        await self.session.execute(
            delete(OneTimeToken).where(
                OneTimeToken.user_id == user_id,
                OneTimeToken.purpose.in_(tuple(purposes)),
                OneTimeToken.used_at.is_(None),
            )
        )

    async def newest_usable_email(self, user_id: str, purpose: str, now: datetime) -> str | None:
        """The address of the user's newest unused, unexpired link for ``purpose``."""
        row = (
            await self.session.execute(
                select(OneTimeToken.email)
                .where(
                    OneTimeToken.user_id == user_id,
                    OneTimeToken.purpose == purpose,
                    OneTimeToken.used_at.is_(None),
                    OneTimeToken.expires_at > now,
                )
                .order_by(OneTimeToken.created_at.desc())
                .limit(1)
            )
        ).first()
        return row[0] if row else None

    async def addresses_of(self, user_id: str) -> list[str]:
        """Every address the user's links were sent to, used or not."""
        result = await self.session.execute(select(OneTimeToken.email).where(OneTimeToken.user_id == user_id))
        return [email for email in result.scalars() if email]
