"""Registered clients kept in memory, so the token, introspection and revocation endpoints don't
read the client's row on every request (issue 14: the re-read was 14 % of a worker's time).

Every change to a client (``idp.oauth.clients``: created, updated, secret rotated, disabled,
enabled, deleted) calls :meth:`ClientCache.changed` after it is committed (``idp.runtime``
subscribes to those events), which forgets it on every node at once; how the cache stays honest
otherwise is :mod:`idp.storage.repositories.row_cache`'s.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import OAuthClient
from idp.storage.repositories.clients import ClientRepository
from idp.storage.repositories.row_cache import ALL, RowCache

__all__ = ("ALL", "CHANNEL", "ClientCache")

CHANNEL = "clients_changed"


class ClientCache(RowCache[OAuthClient]):
    channel = CHANNEL

    @staticmethod
    async def load(session: AsyncSession, client_id: str) -> OAuthClient | None:
        return await ClientRepository(session).get(client_id)  # disabled ones included: callers decide
