"""Refresh tokens (RFC 6749 §6): one row per issued token, rotated by an atomic update, revoked by
family (every token rotated from one authorization, RFC 9700 §4.14.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import RefreshToken, User
from idp.storage.repositories import core_rows

# The rotation's statement, built once (with bound parameters) rather than per request: Core, as
# idp.storage.repositories.core_rows explains.
_TABLE = core_rows.table_of(RefreshToken)
_SPEND = (
    update(_TABLE)
    .where(
        _TABLE.c.jti == bindparam("given_jti"),
        _TABLE.c.token_digest == bindparam("given_digest"),
        _TABLE.c.client_id == bindparam("given_client_id"),
        _TABLE.c.used_at.is_(None),
        _TABLE.c.revoked_at.is_(None),
        _TABLE.c.expires_at > bindparam("given_at"),
        _TABLE.c.family_expires_at > bindparam("given_at"),
        exists().where(User.id == _TABLE.c.user_id, User.disabled.is_(False)),
    )
    .values(used_at=bindparam("given_at"))
    .returning(*_TABLE.c)
)
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
        await core_rows.insert_row(self.session, token)

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

    async def spend(self, jti: str, token_digest: str, client_id: str, at: datetime) -> RefreshToken | None:
        """Mark the token used, in one statement, if it may be rotated now: this digest, issued
        to this client, neither used nor revoked, not expired, its user there and not disabled.
        The row, or None when any of that fails (the caller reads it to say which). Comparing the
        digest in SQL leaks nothing: it is a hash of what the caller sent."""
        parameters = {"given_jti": jti, "given_digest": token_digest, "given_client_id": client_id, "given_at": at}
        return await core_rows.spend(self.session, _SPEND, parameters, RefreshToken)

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
