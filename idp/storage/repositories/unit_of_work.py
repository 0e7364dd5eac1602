"""A unit of work: the repositories of one protocol request over one database session.

The token, introspection and revocation endpoints read the client, the code or refresh token and
write what the grant issues in one session (one connection, one transaction on PostgreSQL), and
commit once. ``commit`` is there for the one step that must outlive a refusal: revoking a grant
whose code or refresh token was replayed is committed before the error is raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.db import Database
from idp.storage.models import OAuthClient, User
from idp.storage.repositories.client_cache import ClientCache
from idp.storage.repositories.clients import ClientRepository
from idp.storage.repositories.codes import AuthorizationCodeRepository
from idp.storage.repositories.refresh_tokens import RefreshTokenRepository
from idp.storage.repositories.revocations import RevocationRepository, SessionClientRepository
from idp.storage.repositories.user_cache import UserCache
from idp.storage.repositories.users import UserRepository


class CachedClients:
    """The unit of work's client look-up answered from a :class:`ClientCache` (its own session on
    a miss), so a request whose client is cached reads nothing else may touch the database."""

    def __init__(self, cache: ClientCache) -> None:
        self._cache = cache

    async def get(self, client_id: str) -> OAuthClient | None:
        return await self._cache.get(client_id)

    def in_memory(self, client_id: str) -> OAuthClient | None:
        return self._cache.in_memory(client_id)


class CachedUsers:
    """Read-only look-ups of accounts answered from a :class:`UserCache` (its own session on a
    miss), or in the unit of work's session while the cache is not in use: the copy it returns
    is shared, never changed or written back."""

    def __init__(self, cache: UserCache, repository: UserRepository) -> None:
        self._cache = cache
        self._repository = repository

    async def get(self, user_id: str) -> User | None:
        if self._cache.active:
            return await self._cache.get(user_id)
        return await self._repository.get(user_id)


class UnitOfWork:
    def __init__(
        self, session: AsyncSession, clients: ClientCache | None = None, users: UserCache | None = None
    ) -> None:
        self._session = session
        self.clients: ClientRepository | CachedClients = (
            ClientRepository(session) if clients is None else CachedClients(clients)
        )
        self.users = UserRepository(session)
        # For the resource endpoints' reads only (UserInfo, introspection): never to change one.
        self.cached_users: UserRepository | CachedUsers = (
            self.users if users is None else CachedUsers(users, self.users)
        )
        self.codes = AuthorizationCodeRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)
        self.revocations = RevocationRepository(session)
        self.session_clients = SessionClientRepository(session)

    async def commit(self) -> None:
        await self._session.commit()


class UnitsOfWork:
    """Opens units of work on ``db``: commits on success, rolls back on any exception. A session
    that runs no statement takes no connection (SQLAlchemy checks one out on first use)."""

    def __init__(self, db: Database, clients: ClientCache | None = None, users: UserCache | None = None) -> None:
        self._db = db
        self._clients = clients
        self._users = users

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[UnitOfWork]:
        async with self._db.session() as session:
            yield UnitOfWork(session, self._clients, self._users)
