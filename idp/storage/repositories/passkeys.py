"""Passkeys and security keys: the WebAuthn credentials in ``mfa_credentials`` (type "webauthn").

A sign-in stores the new signature count by a conditional UPDATE on the count it read, so of two
concurrent assertions with the same count only one passes (WebAuthn §6.1.1)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import MfaCredential
from idp.storage.repositories.errors import AlreadyTaken

WEBAUTHN = "webauthn"


def _confirmed(user_id: str) -> Select[MfaCredential]:
    return select(MfaCredential).where(
        MfaCredential.user_id == user_id, MfaCredential.type == WEBAUTHN, MfaCredential.confirmed_at.is_not(None)
    )


class PasskeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def of_user(self, user_id: str) -> Sequence[MfaCredential]:
        """The user's confirmed passkeys, oldest first."""
        query = _confirmed(user_id).order_by(MfaCredential.created_at, MfaCredential.id)
        return (await self.session.execute(query)).scalars().all()

    async def count(self, user_id: str) -> int:
        query = (
            select(func.count())
            .select_from(MfaCredential)
            .where(
                MfaCredential.user_id == user_id,
                MfaCredential.type == WEBAUTHN,
                MfaCredential.confirmed_at.is_not(None),
            )
        )
        return int((await self.session.execute(query)).scalar_one())

    async def is_registered(self, credential_id: str) -> bool:
        """Whether any account has a credential with this WebAuthn credential id."""
        query = select(MfaCredential.id).where(MfaCredential.credential_id == credential_id)
        return (await self.session.execute(query)).first() is not None

    async def add(self, passkey: MfaCredential) -> None:
        """Store a new passkey. Raises AlreadyTaken when its credential id was registered meanwhile
        (the unique index decides a race the caller's is_registered could not)."""
        self.session.add(passkey)
        try:
            await self.session.flush()
        except IntegrityError:
            raise AlreadyTaken("credential_id") from None

    async def by_credential_id(self, credential_id: str) -> MfaCredential | None:
        """The confirmed passkey a sign-in names, whoever's it is."""
        query = select(MfaCredential).where(
            MfaCredential.credential_id == credential_id,
            MfaCredential.type == WEBAUTHN,
            MfaCredential.confirmed_at.is_not(None),
        )
        return (await self.session.execute(query)).scalars().first()

    async def record_sign_in(
        self, passkey_id: str, *, seen_count: int, new_count: int, backed_up: bool, now: datetime
    ) -> bool:
        """Store a sign-in's signature count (and backup state) if the stored count is still the
        ``seen_count`` the caller checked against; False otherwise (a concurrent sign-in stored
        its count first, or the passkey is gone)."""
        result = await self.session.execute(
            update(MfaCredential)
            .where(MfaCredential.id == passkey_id, MfaCredential.sign_count == seen_count)
            .values(sign_count=new_count, last_used_at=now, backed_up=backed_up)
        )
        return getattr(result, "rowcount", 0) == 1

    async def exists(self, passkey_id: str) -> bool:
        query = select(MfaCredential.id).where(MfaCredential.id == passkey_id)
        return (await self.session.execute(query)).first() is not None

    async def rename(self, user_id: str, passkey_id: str, name: str) -> MfaCredential | None:
        """Rename one of the user's passkeys; None when it isn't the user's (or is gone)."""
        result = await self.session.execute(
            update(MfaCredential)
            .where(MfaCredential.id == passkey_id, MfaCredential.user_id == user_id, MfaCredential.type == WEBAUTHN)
            .values(name=name)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        return (await self.session.execute(select(MfaCredential).where(MfaCredential.id == passkey_id))).scalar_one()

    async def remove(self, user_id: str, passkey_id: str) -> bool:
        """Delete one of the user's passkeys; whether it was there."""
        result = await self.session.execute(
            delete(MfaCredential).where(
                MfaCredential.id == passkey_id, MfaCredential.user_id == user_id, MfaCredential.type == WEBAUTHN
            )
        )
        return getattr(result, "rowcount", 0) == 1
