"""Remembered consent: per user and client, the scopes the user agreed to share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import Consent, OAuthClient


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
        """Add ``scopes`` to what the user agreed to share with the client; the whole set."""
        row = await self._get(user_id, client_id)
        if row is None:
            row = Consent(user_id=user_id, client_id=client_id, scopes=sorted(set(scopes)))
            self.session.add(row)
        else:
            row.scopes = sorted(set(row.scopes) | set(scopes))
        return set(row.scopes)

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
