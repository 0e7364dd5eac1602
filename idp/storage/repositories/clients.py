"""Registered OAuth clients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import OAuthClient


class ClientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, client_id: str) -> OAuthClient | None:
        return await self.session.get(OAuthClient, client_id)

    def in_memory(self, client_id: str) -> OAuthClient | None:
        """None: every look-up here reads the database (the cached look-up is CachedClients)."""
        return None

    async def get_by_name(self, name: str) -> OAuthClient | None:
        result = await self.session.execute(select(OAuthClient).where(OAuthClient.name == name))
        return result.scalars().first()

    async def names(self, client_ids: Iterable[str]) -> dict[str, str]:
        """The name of each of these clients that exists, by id."""
        rows = await self.session.execute(
            select(OAuthClient.id, OAuthClient.name).where(OAuthClient.id.in_(client_ids))
        )
        return {client_id: name for client_id, name in rows.all()}

    async def add(self, client: OAuthClient) -> OAuthClient:
        self.session.add(client)
        await self.session.flush()
        return client

    async def list(self) -> Sequence[OAuthClient]:
        result = await self.session.execute(select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.id))
        return result.scalars().all()

    async def enabled_web_origins(self) -> set[str]:
        """Every web origin registered on a client that is not disabled (CORS)."""
        rows = await self.session.execute(select(OAuthClient.web_origins).where(OAuthClient.disabled.is_(False)))
        return {origin for (origins,) in rows.all() for origin in origins or ()}

    async def first_party_web_origins(self) -> set[str]:
        """Every web origin registered on an enabled first-party client (the live notifications)."""
        rows = await self.session.execute(
            select(OAuthClient.web_origins).where(OAuthClient.disabled.is_(False), OAuthClient.first_party.is_(True))
        )
        return {origin for (origins,) in rows.all() for origin in origins or ()}

    async def set_disabled(self, client_id: str, disabled: bool) -> None:
        await self.session.execute(update(OAuthClient).where(OAuthClient.id == client_id).values(disabled=disabled))

    async def delete(self, client_id: str) -> bool:
        """Delete the client; its codes, refresh tokens and consents go with it (ON DELETE CASCADE)."""
        result = await self.session.execute(delete(OAuthClient).where(OAuthClient.id == client_id))
        return bool(getattr(result, "rowcount", 0) == 1)
