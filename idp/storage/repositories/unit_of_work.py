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
from idp.storage.repositories.clients import ClientRepository
from idp.storage.repositories.codes import AuthorizationCodeRepository
from idp.storage.repositories.refresh_tokens import RefreshTokenRepository
from idp.storage.repositories.users import UserRepository


class UnitOfWork:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.clients = ClientRepository(session)
        self.users = UserRepository(session)
        self.codes = AuthorizationCodeRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)

    async def commit(self) -> None:
        await self._session.commit()


class UnitsOfWork:
    """Opens units of work on ``db``: commits on success, rolls back on any exception."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[UnitOfWork]:
        async with self._db.session() as session:
            yield UnitOfWork(session)
