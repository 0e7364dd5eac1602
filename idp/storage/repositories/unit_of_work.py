"""A unit of work: the repositories of one protocol request over one database session.

The token, introspection and revocation endpoints read the client, the code or refresh token and
write what the grant issues in one session (one connection, one transaction on PostgreSQL), and
commit once. ``commit`` is there for the one step that must outlive a refusal: revoking a grant
whose code or refresh token was replayed is committed before the error is raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.db import Database, LazySession
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

    def __init__(self, cache: UserCache, repository: Callable[[], UserRepository]) -> None:
        self._cache = cache
        self._repository = repository

    async def get(self, user_id: str) -> User | None:
        if self._cache.active:
            return await self._cache.get(user_id)
        return await self._repository().get(user_id)


Repository = TypeVar("Repository")


def _over_session(repository: Callable[[AsyncSession], Repository]) -> cached_property[Repository]:
    """A unit of work's repository, made on first use over its session."""
    return cached_property(lambda unit: repository(unit._session))


class UnitOfWork:
    """The repositories of one unit of work, each made on first use over the one session, which
    is made only then too: a request answered from the caches makes neither."""

    def __init__(
        self, session: LazySession, clients: ClientCache | None = None, users: UserCache | None = None
    ) -> None:
        self._lazy = session
        self._client_cache = clients
        self._user_cache = users

    @property
    def _session(self) -> AsyncSession:
        return self._lazy.get()

    @cached_property
    def clients(self) -> ClientRepository | CachedClients:
        cache = self._client_cache
        return ClientRepository(self._session) if cache is None else CachedClients(cache)

    users = _over_session(UserRepository)

    @cached_property
    def cached_users(self) -> UserRepository | CachedUsers:
        """For the resource endpoints' reads only (UserInfo, introspection): never to change one."""
        cache = self._user_cache
        return self.users if cache is None else CachedUsers(cache, lambda: self.users)

    codes = _over_session(AuthorizationCodeRepository)
    refresh_tokens = _over_session(RefreshTokenRepository)
    revocations = _over_session(RevocationRepository)
    session_clients = _over_session(SessionClientRepository)

    async def commit(self) -> None:
        if self._lazy.made is not None:
            await self._lazy.made.commit()


class UnitsOfWork:
    """Opens units of work on ``db``: commits on success, rolls back on any exception. A unit
    that uses no repository makes no session, and a session that runs no statement takes no
    connection (SQLAlchemy checks one out on first use)."""

    def __init__(self, db: Database, clients: ClientCache | None = None, users: UserCache | None = None) -> None:
        self._db = db
        self._clients = clients
        self._users = users

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[UnitOfWork]:
        async with self._db.lazy_session() as session:
            yield UnitOfWork(session, self._clients, self._users)
