"""Known devices: the browsers each user signed in from, by the digest of their device cookie."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import KnownDevice


@dataclass(frozen=True)
class Remembered:
    known: bool  # the user signed in from this device before
    first: bool  # the user's first device ever
    devices: int  # how many the user has now, when a device was added (else 0: not counted)


class DeviceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def remember(
        self, user_id: str, device_digest: str, *, label: str, ip: str | None, now: datetime, known: bool = True
    ) -> Remembered:
        """Record a sign-in from the device: a new row, or the known one's label, time and IP.
        ``known``: whether the device is likely known (then its row is updated first: one statement).

        The primary key (user, device) decides concurrent sign-ins from one browser, within one
        INSERT … ON CONFLICT DO NOTHING: exactly one of them finds the device new, none fails (a
        look-up then an insert let two of them insert, an IntegrityError and a 500)."""
        if known and await self._seen_again(user_id, device_digest, label=label, ip=ip, now=now):
            return Remembered(known=True, first=False, devices=0)
        count = await self._count(user_id)
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        added = await self.session.execute(
            insert(KnownDevice)
            .values(
                user_id=user_id,
                device_digest=device_digest,
                label=label,
                first_seen_at=now,
                last_seen_at=now,
                last_ip=ip,
            )
            .on_conflict_do_nothing(index_elements=["user_id", "device_digest"])
        )
        if getattr(added, "rowcount", 0) == 1:
            return Remembered(known=False, first=not count, devices=count + 1)
        # Another sign-in from this browser added it a moment ago.
        await self._seen_again(user_id, device_digest, label=label, ip=ip, now=now)
        return Remembered(known=True, first=False, devices=0)

    async def _seen_again(self, user_id: str, device_digest: str, *, label: str, ip: str | None, now: datetime) -> bool:
        updated = await self.session.execute(
            update(KnownDevice)
            .where(KnownDevice.user_id == user_id, KnownDevice.device_digest == device_digest)
            .values(label=label, last_seen_at=now, last_ip=ip)
        )
        return getattr(updated, "rowcount", 0) == 1

    async def forget_least_recent(self, user_id: str, *, keep: int) -> None:
        """Forget the user's least recently seen devices beyond the ``keep`` most recent."""
        count = await self._count(user_id)
        if not count or count <= keep:
            return
        oldest = (
            await self.session.execute(
                select(KnownDevice.device_digest)
                .where(KnownDevice.user_id == user_id)
                .order_by(KnownDevice.last_seen_at.asc())
                .limit(count - keep)
            )
        ).scalars()
        await self.session.execute(
            delete(KnownDevice).where(KnownDevice.user_id == user_id, KnownDevice.device_digest.in_(list(oldest)))
        )

    async def of_user(self, user_id: str) -> Sequence[KnownDevice]:
        """The user's devices, first seen first (the account export)."""
        result = await self.session.execute(
            select(KnownDevice)
            .where(KnownDevice.user_id == user_id)
            .order_by(KnownDevice.first_seen_at, KnownDevice.device_digest)
        )
        return result.scalars().all()

    async def _count(self, user_id: str) -> int:
        query = select(func.count()).select_from(KnownDevice).where(KnownDevice.user_id == user_id)
        return int(await self.session.scalar(query) or 0)
