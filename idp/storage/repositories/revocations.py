"""The record of security decisions the key-value store only caches (issue 15): revoked access
tokens and grants until the last token they concern expires, and the relying parties that joined
each browser session (who gets a back-channel logout when it ends, even once the key-value store
has lost the session)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import RevokedAccessToken, RevokedGrant, SessionClient


class RevocationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def revoke_access_token(self, jti: str, expires_at: datetime, now: datetime) -> None:
        """Record the revocation (idempotent: revoking twice keeps the first record)."""
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = insert(RevokedAccessToken).values(jti=jti, revoked_at=now, expires_at=expires_at)
        await self.session.execute(statement.on_conflict_do_nothing(index_elements=["jti"]))

    async def revoke_grants(self, grant_ids: Collection[str], expires_at: datetime, now: datetime) -> None:
        """Record each grant as revoked until ``expires_at``, when the last access token it could
        have issued expires (a grant revoked again keeps the later end)."""
        if not grant_ids:
            return
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        rows = [{"grant_id": grant_id, "revoked_at": now, "expires_at": expires_at} for grant_id in sorted(grant_ids)]
        statement = insert(RevokedGrant).values(rows)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["grant_id"], set_={"expires_at": statement.excluded.expires_at}
            )
        )

    async def revoked_grants_among(self, grant_ids: Collection[str], now: datetime) -> set[str]:
        """Which of ``grant_ids`` are revoked (and not yet past the end of their tokens)."""
        if not grant_ids:
            return set()
        query = select(RevokedGrant.grant_id).where(
            RevokedGrant.grant_id.in_(list(grant_ids)), RevokedGrant.expires_at > now
        )
        return set((await self.session.execute(query)).scalars())

    async def is_revoked(self, jti: str, grant_id: str | None, now: datetime) -> bool:
        """Whether the access token ``jti`` (of the grant ``grant_id``) is revoked, from the record."""
        query = select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == jti, RevokedAccessToken.expires_at > now)
        if (await self.session.execute(query)).first() is not None:
            return True
        return grant_id is not None and bool(await self.revoked_grants_among([grant_id], now))

    async def live(self, now: datetime) -> tuple[list[tuple[str, datetime]], list[tuple[str, datetime]]]:
        """Every revocation still in force: (jti, expiry) of access tokens, (grant id, end) of grants."""
        tokens = await self.session.execute(
            select(RevokedAccessToken.jti, RevokedAccessToken.expires_at).where(RevokedAccessToken.expires_at > now)
        )
        grants = await self.session.execute(
            select(RevokedGrant.grant_id, RevokedGrant.expires_at).where(RevokedGrant.expires_at > now)
        )
        return [(jti, end) for jti, end in tokens.all()], [(grant, end) for grant, end in grants.all()]

    async def delete_expired(self, now: datetime) -> dict[str, int]:
        """Forget revocations of tokens that have expired anyway (`idp db cleanup`)."""
        tokens = await self.session.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now))
        grants = await self.session.execute(delete(RevokedGrant).where(RevokedGrant.expires_at < now))
        return {
            "revoked_access_tokens": int(getattr(tokens, "rowcount", 0) or 0),
            "revoked_grants": int(getattr(grants, "rowcount", 0) or 0),
        }


class SessionClientRepository:
    """The relying parties each browser session gave tokens to (OIDC Back-Channel Logout 1.0 §2:
    the OP must know them to send logout tokens), one row per client joining a session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def join(self, sid: str, user_id: str, client_id: str, *, now: datetime, expires_at: datetime) -> None:
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = insert(SessionClient).values(
            sid=sid, user_id=user_id, client_id=client_id, created_at=now, expires_at=expires_at, ended_at=None
        )
        # The same sid joined again after a re-authentication: it lives on, as the session does.
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["sid", "client_id"],
                set_={"expires_at": statement.excluded.expires_at, "ended_at": None},
            )
        )

    async def extend(self, sid: str, expires_at: datetime) -> None:
        """The session was renewed (a new sign-in keeps the sid): its clients' rows live as long."""
        await self.session.execute(
            update(SessionClient)
            .where(SessionClient.sid == sid, SessionClient.ended_at.is_(None))
            .values(expires_at=expires_at)
        )

    async def live_clients(self, sid: str, now: datetime) -> list[SessionClient]:
        """The clients of the session ``sid`` while it has not ended (nor reached its end)."""
        query = select(SessionClient).where(
            SessionClient.sid == sid, SessionClient.ended_at.is_(None), SessionClient.expires_at > now
        )
        return list((await self.session.execute(query.order_by(SessionClient.created_at))).scalars())

    async def end(self, sid: str, now: datetime) -> Sequence[str]:
        """Mark the session ended; the client ids that had joined it and were not told yet (one
        statement, so of two concurrent ends only one gets them)."""
        statement = (
            update(SessionClient)
            .where(SessionClient.sid == sid, SessionClient.ended_at.is_(None), SessionClient.expires_at > now)
            .values(ended_at=now)
            .returning(SessionClient.client_id)
        )
        return sorted((await self.session.execute(statement)).scalars())

    async def delete_expired(self, now: datetime) -> int:
        result = await self.session.execute(delete(SessionClient).where(SessionClient.expires_at < now))
        return int(getattr(result, "rowcount", 0) or 0)
