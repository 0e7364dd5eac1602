"""Refresh tokens (RFC 6749 §6): one row per issued token, rotated by an atomic update, revoked by
family (every token rotated from one authorization, RFC 9700 §4.14.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import RefreshToken

# Enough rounds for rotations that commit while the revocation runs (see revoke_family).
_REVOKE_ROUNDS = 5


@dataclass(frozen=True)
class SessionFamily:
    """A refresh-token row issued in one IdP session, as ending that session needs it."""

    family_id: str
    client_id: str
    scope: str
    revoked: bool


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: RefreshToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def get(self, jti: str) -> RefreshToken | None:
        return await self.session.get(RefreshToken, jti)

    async def consume(self, jti: str, at: datetime) -> bool:
        """Mark the token used; False when it was used or revoked meanwhile."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == jti, RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None))
            .values(used_at=at)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def revoke_family(self, family_id: str, at: datetime) -> None:
        """Revoke every token of the family that is not revoked yet."""
        # A rotation that commits while an UPDATE waits on its lock is not in that statement's
        # snapshot (PostgreSQL READ COMMITTED), so repeat until a round finds nothing left.
        for _ in range(_REVOKE_ROUNDS):
            result = await self.session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            if not getattr(result, "rowcount", 0):
                break

    async def live_families_of(self, user_id: str, client_id: str | None = None) -> set[tuple[str, str]]:
        """(family id, client id) of the user's unrevoked tokens (for one client, or any)."""
        query = select(RefreshToken.family_id, RefreshToken.client_id).where(
            RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
        )
        if client_id is not None:
            query = query.where(RefreshToken.client_id == client_id)
        return {(family, owner) for family, owner in (await self.session.execute(query)).all()}

    async def issued_in_session(self, user_id: str, sid: str) -> Sequence[SessionFamily]:
        rows = await self.session.execute(
            select(RefreshToken.family_id, RefreshToken.client_id, RefreshToken.scope, RefreshToken.revoked_at).where(
                RefreshToken.user_id == user_id, RefreshToken.session_id == sid
            )
        )
        return [SessionFamily(family, owner, scope, at is not None) for family, owner, scope, at in rows.all()]

    async def live_families_of_client(self, client_id: str) -> set[tuple[str, str | None]]:
        """(family id, user id) of the client's unrevoked tokens."""
        query = select(RefreshToken.family_id, RefreshToken.user_id).where(
            RefreshToken.client_id == client_id, RefreshToken.revoked_at.is_(None)
        )
        return {(family, user) for family, user in (await self.session.execute(query)).all()}
