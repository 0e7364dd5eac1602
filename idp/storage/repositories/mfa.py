"""Second factors: the TOTP credential (``mfa_credentials`` of type "totp"), what any confirmed
factor says about sign-in, and recovery codes.

Each single-use artefact is spent by one conditional UPDATE (a TOTP time step, a recovery code),
so of concurrent requests with the same code exactly one succeeds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import MfaCredential, RecoveryCode

TOTP = "totp"


class MfaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- TOTP ---------------------------------------------------------------------------------

    async def get(self, credential_id: str) -> MfaCredential | None:
        return await self.session.get(MfaCredential, credential_id)

    async def confirmed_totp(self, user_id: str) -> MfaCredential | None:
        query = select(MfaCredential).where(
            MfaCredential.user_id == user_id, MfaCredential.type == TOTP, MfaCredential.confirmed_at.is_not(None)
        )
        return (await self.session.execute(query)).scalars().first()

    async def replace_pending_totp(self, credential: MfaCredential) -> None:
        """Store an unconfirmed TOTP enrolment in place of the user's earlier unconfirmed one."""
        await self.session.execute(
            delete(MfaCredential).where(
                MfaCredential.user_id == credential.user_id,
                MfaCredential.type == TOTP,
                MfaCredential.confirmed_at.is_(None),
            )
        )
        self.session.add(credential)

    async def confirm_totp(self, credential_id: str, user_id: str, *, step: int, now: datetime) -> bool:
        """Confirm the user's unconfirmed enrolment, ``step`` spent; False when it isn't one (any more)."""
        result = await self.session.execute(
            update(MfaCredential)
            .where(
                MfaCredential.id == credential_id,
                MfaCredential.user_id == user_id,
                MfaCredential.confirmed_at.is_(None),
            )
            .values(confirmed_at=now, last_used_step=step, last_used_at=now)
        )
        return getattr(result, "rowcount", 0) == 1

    async def spend_totp_step(self, credential_id: str, step: int, now: datetime) -> bool:
        """Record ``step`` as used unless it or a later step was (RFC 6238 §5.2): True for exactly
        one of concurrent callers."""
        result = await self.session.execute(
            update(MfaCredential)
            .where(
                MfaCredential.id == credential_id,
                MfaCredential.confirmed_at.is_not(None),
                (MfaCredential.last_used_step.is_(None)) | (MfaCredential.last_used_step < step),
            )
            .values(last_used_step=step, last_used_at=now)
        )
        return getattr(result, "rowcount", 0) == 1

    async def delete_totp(self, user_id: str) -> None:
        """Remove the user's TOTP, confirmed or pending."""
        await self.session.execute(
            delete(MfaCredential).where(MfaCredential.user_id == user_id, MfaCredential.type == TOTP)
        )

    # -- any factor ---------------------------------------------------------------------------

    async def delete_every_factor(self, user_id: str) -> int:
        """Remove every second factor of the user (TOTP and passkeys, confirmed or pending); how
        many confirmed ones there were."""
        confirmed = len(await self.confirmed_types(user_id))
        await self.session.execute(delete(MfaCredential).where(MfaCredential.user_id == user_id))
        return confirmed

    async def has_confirmed_factor(self, user_id: str) -> bool:
        """A confirmed credential of any type (TOTP, passkey)."""
        return (await self.session.execute(_confirmed_factor(user_id).limit(1))).first() is not None

    async def confirmed_types(self, user_id: str) -> Sequence[str]:
        """The type of each confirmed credential of the user."""
        query = select(MfaCredential.type).where(
            MfaCredential.user_id == user_id, MfaCredential.confirmed_at.is_not(None)
        )
        return (await self.session.execute(query)).scalars().all()


def _confirmed_factor(user_id: str) -> Select[str]:
    return select(MfaCredential.id).where(MfaCredential.user_id == user_id, MfaCredential.confirmed_at.is_not(None))


class RecoveryCodeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def replace(self, user_id: str, hashes: Iterable[str]) -> None:
        """The new set replaces every earlier code, used or not."""
        await self.delete_all(user_id)
        self.session.add_all(RecoveryCode(user_id=user_id, code_hash=code_hash) for code_hash in hashes)

    async def unused(self, user_id: str) -> Sequence[tuple[str, str]]:
        """(id, hash) of each of the user's unused codes."""
        rows = await self.session.execute(
            select(RecoveryCode.id, RecoveryCode.code_hash).where(
                RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
            )
        )
        return [(row_id, code_hash) for row_id, code_hash in rows.all()]

    async def spend(self, code_id: str, now: datetime) -> bool:
        """Mark the code used unless it was: True for exactly one of concurrent callers."""
        result = await self.session.execute(
            update(RecoveryCode).where(RecoveryCode.id == code_id, RecoveryCode.used_at.is_(None)).values(used_at=now)
        )
        return getattr(result, "rowcount", 0) == 1

    async def count_unused(self, user_id: str) -> int:
        query = (
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        return int((await self.session.execute(query)).scalar_one())

    async def delete_all(self, user_id: str) -> None:
        await self.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
