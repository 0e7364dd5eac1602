"""Authorization codes (RFC 6749 §4.1.2): stored by digest, consumed once by an atomic update."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import AuthorizationCode, User
from idp.storage.repositories import core_rows

# The redemption's statement, built once (with bound parameters) rather than per request: Core, as
# idp.storage.repositories.core_rows explains.
_TABLE = core_rows.table_of(AuthorizationCode)
_SPEND = (
    update(_TABLE)
    .where(
        _TABLE.c.code_digest == bindparam("given_digest"),
        _TABLE.c.client_id == bindparam("given_client_id"),
        _TABLE.c.consumed_at.is_(None),
        _TABLE.c.expires_at > bindparam("given_at"),
        exists().where(User.id == _TABLE.c.user_id, User.disabled.is_(False)),
    )
    .values(consumed_at=bindparam("given_at"))
    .returning(*_TABLE.c)
)


class AuthorizationCodeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, code: AuthorizationCode) -> None:
        await core_rows.insert_row(self.session, code)

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

    async def spend(self, code_digest: str, client_id: str, at: datetime) -> AuthorizationCode | None:
        """Mark the code used, in one statement, if it may be redeemed now: issued to this client,
        unused, unexpired, its user there and not disabled. The row, or None when any of that
        fails (the caller reads it to say which). A concurrent redemption waits on the row and
        then matches none, as in ``consume``."""
        parameters = {"given_digest": code_digest, "given_client_id": client_id, "given_at": at}
        return await core_rows.spend(self.session, _SPEND, parameters, AuthorizationCode)

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
