"""Deleting what can no longer matter (`idp db cleanup`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.announcements import delete_read
from idp.storage.models import AuthorizationCode, KnownDevice, RefreshToken
from idp.storage.repositories.revocations import RevocationRepository, SessionClientRepository


class MaintenanceRepository:
    """Deletes rows that can no longer matter (run by `idp db cleanup`, e.g. from cron)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def delete_expired(
        self,
        now: datetime,
        code_grace: timedelta = timedelta(days=1),
        device_lifetime: timedelta = timedelta(days=400),
    ) -> dict[str, int]:
        # Used codes are kept a while past expiry: replay detection needs them, not just validity.
        codes = await self.session.execute(
            delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - code_grace)
        )
        # A refresh token past its own expiry can't be used; its family-mates carry the family.
        refresh = await self.session.execute(
            delete(RefreshToken).where(
                or_(RefreshToken.family_expires_at < now, RefreshToken.expires_at < now - code_grace)
            )
        )
        # A browser unseen for longer than its device cookie lives can't be recognised any more.
        devices = await self.session.execute(
            delete(KnownDevice).where(KnownDevice.last_seen_at < now - device_lifetime)
        )
        # Announcements between processes are read within a second; serving processes prune their
        # own, this catches those left when the last server stopped (idp.storage.announcements).
        announcements = await delete_read(self.session, now)
        # Revocations outlive the tokens they concern by nothing: an expired token is refused anyway.
        revocations = await RevocationRepository(self.session).delete_expired(now)
        return {
            "authorization_codes": int(getattr(codes, "rowcount", 0) or 0),
            "refresh_tokens": int(getattr(refresh, "rowcount", 0) or 0),
            "known_devices": int(getattr(devices, "rowcount", 0) or 0),
            "announcements": announcements,
            **revocations,
            "session_clients": await SessionClientRepository(self.session).delete_expired(now),
        }
