"""Remembered consent: per user and client, the scopes the user agreed to share.

One row per user and client (``uq_consents_user_client``). Two approvals at once (two tabs) must
neither both insert it nor overwrite each other's scopes: the database decides which one inserts
(ON CONFLICT DO NOTHING), and the merge into an existing row holds that row while it reads it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import Consent, OAuthClient, new_id, utcnow

# A consent withdrawn between the insert that found it and the read that would merge into it is
# inserted afresh; this bounds the retries (a withdrawal racing every attempt is not a real case).
_GRANT_ATTEMPTS = 3


class ConsentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _get(self, user_id: str, client_id: str) -> Consent | None:
        query = select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def granted_scopes(self, user_id: str, client_id: str) -> set[str]:
        row = await self._get(user_id, client_id)
        return set(row.scopes) if row else set()

    async def grant(self, user_id: str, client_id: str, scopes: Iterable[str]) -> set[str]:
        """Add ``scopes`` to what the user agreed to share with the client; the whole set.

        Safe under concurrent calls for the same user and client: every scope approved ends up in
        the one row. A read-then-insert would let two first approvals both insert (an
        IntegrityError, a 500), and a read-modify-write of the row would let the later commit drop
        the scopes of the earlier one."""
        wanted = set(scopes)
        for _ in range(_GRANT_ATTEMPTS):
            if await self._insert_unless_present(user_id, client_id, sorted(wanted)):
                return wanted
            # FOR UPDATE holds the row on PostgreSQL until the transaction ends, so concurrent
            # merges are applied one after another. SQLite has no row locks: there the INSERT above
            # already took the database's single write lock for this transaction.
            query = (
                select(Consent)
                .where(Consent.user_id == user_id, Consent.client_id == client_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            row = (await self.session.execute(query)).scalar_one_or_none()
            if row is not None:
                merged = set(row.scopes) | wanted
                if merged != set(row.scopes):
                    row.scopes = sorted(merged)
                return merged
        raise RuntimeError("the consent row was withdrawn during every attempt to grant it")

    async def _insert_unless_present(self, user_id: str, client_id: str, scopes: list[str]) -> bool:
        """Insert the consent unless the user has one for the client; whether it was inserted.
        The unique constraint decides a race within the one statement."""
        now = utcnow()
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = (
            insert(Consent)
            .values(id=new_id(), user_id=user_id, client_id=client_id, scopes=scopes, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["user_id", "client_id"])
        )
        result = await self.session.execute(statement)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def withdraw(self, user_id: str, client_id: str) -> bool:
        """Forget the user's consent for the client; whether there was one."""
        result = await self.session.execute(
            delete(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
        )
        return bool(getattr(result, "rowcount", 0))

    async def list_for_user(self, user_id: str) -> Sequence[tuple[Consent, str]]:
        """The user's consents with each client's name, by name (the applications page)."""
        rows = await self.session.execute(
            select(Consent, OAuthClient.name)
            .join(OAuthClient, OAuthClient.id == Consent.client_id)
            .where(Consent.user_id == user_id)
            .order_by(OAuthClient.name)
        )
        return [(consent, name) for consent, name in rows.all()]
