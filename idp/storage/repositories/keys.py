"""Signing keys: the published set, rotation and purge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import SigningKey


class SigningKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def published(self, now: datetime) -> Sequence[SigningKey]:
        """Active keys and retired keys still inside their publication window."""
        result = await self.session.execute(
            select(SigningKey)
            .where(
                or_(
                    SigningKey.status == "active",
                    (SigningKey.status == "retired") & (SigningKey.publish_until > now),
                )
            )
            .order_by(SigningKey.created_at.desc(), SigningKey.kid)
        )
        return result.scalars().all()

    async def all(self) -> Sequence[SigningKey]:
        result = await self.session.execute(select(SigningKey).order_by(SigningKey.created_at.desc(), SigningKey.kid))
        return result.scalars().all()

    async def active(self) -> Sequence[SigningKey]:
        result = await self.session.execute(select(SigningKey).where(SigningKey.status == "active"))
        return result.scalars().all()

    async def add(self, key: SigningKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def retire(self, kids: Sequence[str], now: datetime, publish_until: datetime) -> None:
        if kids:
            await self.session.execute(
                update(SigningKey)
                .where(SigningKey.kid.in_(kids), SigningKey.status == "active")
                .values(status="retired", retired_at=now, publish_until=publish_until)
            )

    async def end_signing(self, algs: Sequence[str], now: datetime) -> None:
        """Rotated-out keys of ``algs`` that still sign (their hand-over is ahead) stop now."""
        await self.session.execute(
            update(SigningKey)
            .where(SigningKey.alg.in_(algs), SigningKey.status == "retired", SigningKey.retired_at > now)
            .values(retired_at=now)
        )

    async def delete_expired(self, now: datetime) -> int:
        result = await self.session.execute(
            delete(SigningKey).where(SigningKey.status == "retired", SigningKey.publish_until <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)
