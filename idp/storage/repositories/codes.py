"""Authorization codes (RFC 6749 §4.1.2): stored by digest, consumed once by an atomic update."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import AuthorizationCode


class AuthorizationCodeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, code: AuthorizationCode) -> None:
        self.session.add(code)
        await self.session.flush()

    async def get(self, code_digest: str) -> AuthorizationCode | None:
        return await self.session.get(AuthorizationCode, code_digest)

    async def consume(self, code_digest: str, at: datetime) -> bool:
        """Mark the code used; False when another request already did (a replay). The WHERE on
        ``consumed_at`` decides a race: the second UPDATE waits on the row and then matches none."""
        result = await self.session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.code_digest == code_digest, AuthorizationCode.consumed_at.is_(None))
            .values(consumed_at=at)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def grants_of(self, user_id: str, client_id: str | None = None) -> set[tuple[str, str]]:
        """(grant id, client id) of every code the user was issued (for one client, or any)."""
        query = select(AuthorizationCode.grant_id, AuthorizationCode.client_id).where(
            AuthorizationCode.user_id == user_id
        )
        if client_id is not None:
            query = query.where(AuthorizationCode.client_id == client_id)
        return {(grant, owner) for grant, owner in (await self.session.execute(query)).all()}

    async def redeemed_in_session(self, user_id: str, sid: str) -> Sequence[tuple[str, str]]:
        """(grant id, client id) of the codes issued in the IdP session ``sid`` and redeemed."""
        rows = await self.session.execute(
            select(AuthorizationCode.grant_id, AuthorizationCode.client_id).where(
                AuthorizationCode.user_id == user_id,
                AuthorizationCode.session_id == sid,
                AuthorizationCode.consumed_at.is_not(None),
            )
        )
        return [(grant, owner) for grant, owner in rows.all()]

    async def grants_of_client(self, client_id: str) -> set[tuple[str, str | None]]:
        """(grant id, user id) of every code issued to the client that is still kept."""
        query = select(AuthorizationCode.grant_id, AuthorizationCode.user_id).where(
            AuthorizationCode.client_id == client_id
        )
        return {(grant, user) for grant, user in (await self.session.execute(query)).all()}
