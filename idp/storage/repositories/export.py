"""What the account export reads: every row about one user, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import (
    AuditEvent,
    Consent,
    KnownDevice,
    MfaCredential,
    OAuthClient,
    RecoveryCode,
    RefreshToken,
    User,
)
from idp.storage.repositories.activity import ActivityRepository
from idp.storage.repositories.devices import DeviceRepository


@dataclass(frozen=True)
class AccountRecords:
    user: User
    consents: Sequence[tuple[Consent, str]]  # with the client's name, oldest first
    mfa_credentials: Sequence[MfaCredential]  # every type, confirmed or not, oldest first
    recovery_codes_total: int
    recovery_codes_unused: int
    refresh_tokens: Sequence[tuple[RefreshToken, str]]  # with the client's name, oldest first
    known_devices: Sequence[KnownDevice]
    audit_events: Sequence[AuditEvent]


class ExportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def records_of(self, user_id: str) -> AccountRecords | None:
        """Everything stored about the user (None: no such account), read in the caller's
        transaction so the parts agree with each other."""
        user = await self.session.get(User, user_id)
        if user is None:
            return None
        consents = await self.session.execute(
            select(Consent, OAuthClient.name)
            .join(OAuthClient, OAuthClient.id == Consent.client_id)
            .where(Consent.user_id == user_id)
            .order_by(Consent.created_at, Consent.client_id)
        )
        credentials = await self.session.execute(
            select(MfaCredential)
            .where(MfaCredential.user_id == user_id)
            .order_by(MfaCredential.created_at, MfaCredential.id)
        )
        codes_total, codes_unused = (
            await self.session.execute(
                select(
                    func.count(RecoveryCode.id), func.count(RecoveryCode.id).filter(RecoveryCode.used_at.is_(None))
                ).where(RecoveryCode.user_id == user_id)
            )
        ).one()
        refresh = await self.session.execute(
            select(RefreshToken, OAuthClient.name)
            .join(OAuthClient, OAuthClient.id == RefreshToken.client_id)
            .where(RefreshToken.user_id == user_id)
            .order_by(RefreshToken.issued_at, RefreshToken.jti)
        )
        return AccountRecords(
            user=user,
            consents=[(consent, name) for consent, name in consents.all()],
            mfa_credentials=credentials.scalars().all(),
            recovery_codes_total=int(codes_total),
            recovery_codes_unused=int(codes_unused),
            refresh_tokens=[(token, name) for token, name in refresh.all()],
            known_devices=await DeviceRepository(self.session).of_user(user_id),
            audit_events=await ActivityRepository(self.session).everything(user_id),
        )
