"""What the protocol reads and writes, as the interfaces it needs (the storage package implements
them with SQL, ``tests/oauth_fakes.py`` in memory).

One request at the token, introspection or revocation endpoint is one unit of work: the client,
the code or refresh token, the user and what the grant issues, in one database session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from idp.storage.models import AuthorizationCode, OAuthClient, RefreshToken, User
from idp.storage.repositories import SessionFamily

__all__ = (
    "Authenticate",
    "Clients",
    "Codes",
    "OpenUnitOfWork",
    "RefreshTokens",
    "Revocations",
    "SessionClients",
    "SessionFamily",
    "UnitOfWork",
    "Users",
)


class Clients(Protocol):
    async def get(self, client_id: str) -> OAuthClient | None: ...

    def in_memory(self, client_id: str) -> OAuthClient | None:
        """The client if ``get`` would answer it from memory now (no I/O), else None."""
        ...


class Users(Protocol):
    async def get(self, user_id: str) -> User | None: ...


class Codes(Protocol):
    async def add(self, code: AuthorizationCode) -> None: ...

    async def get(self, code_digest: str) -> AuthorizationCode | None: ...

    async def consume(self, code_digest: str, at: datetime) -> bool: ...

    async def spend(self, code_digest: str, client_id: str, at: datetime) -> AuthorizationCode | None:
        """Mark the code used if it may be redeemed at ``at`` (this client, unused, unexpired,
        its user active): the row, or None."""
        ...

    async def grants_of(self, user_id: str, client_id: str | None = None) -> set[tuple[str, str]]: ...

    async def redeemed_in_session(self, user_id: str, sid: str) -> Sequence[tuple[str, str]]: ...

    async def grants_of_client(self, client_id: str) -> set[tuple[str, str | None]]: ...


class RefreshTokens(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def get(self, jti: str) -> RefreshToken | None: ...

    async def consume(self, jti: str, at: datetime) -> bool: ...

    async def spend(self, jti: str, token_digest: str, client_id: str, at: datetime) -> RefreshToken | None:
        """Mark the token used if it may be rotated at ``at`` (this digest and client, unused,
        unrevoked, unexpired, its user active): the row, or None."""
        ...

    async def revoke_family(self, family_id: str, at: datetime) -> None: ...

    async def live_families_of(self, user_id: str, client_id: str | None = None) -> set[tuple[str, str]]: ...

    async def issued_in_session(self, user_id: str, sid: str) -> Sequence[SessionFamily]: ...

    async def live_families_of_client(self, client_id: str) -> set[tuple[str, str | None]]: ...


class Revocations(Protocol):
    """The record of revoked access tokens and grants (idp.oauth.denylist caches it)."""

    async def revoke_access_token(self, jti: str, expires_at: datetime, now: datetime) -> None: ...

    async def revoke_grants(self, grant_ids: Collection[str], expires_at: datetime, now: datetime) -> None: ...

    async def revoked_grants_among(self, grant_ids: Collection[str], now: datetime) -> set[str]: ...


class SessionClients(Protocol):
    """The record of the clients that joined each browser session (back-channel logout)."""

    async def join(self, sid: str, user_id: str, client_id: str, *, now: datetime, expires_at: datetime) -> None: ...


class UnitOfWork(Protocol):
    @property
    def clients(self) -> Clients: ...

    @property
    def users(self) -> Users: ...

    @property
    def cached_users(self) -> Users:
        """The same accounts for read-only look-ups, answered from memory where they are cached
        (the resource endpoints' hot path): never an account to change."""
        ...

    @property
    def codes(self) -> Codes: ...

    @property
    def refresh_tokens(self) -> RefreshTokens: ...

    @property
    def revocations(self) -> Revocations: ...

    @property
    def session_clients(self) -> SessionClients: ...

    async def commit(self) -> None: ...


# Opens a unit of work that commits when its block ends normally and rolls back otherwise.
OpenUnitOfWork = Callable[[], AbstractAsyncContextManager[UnitOfWork]]

# Client authentication against the unit of work's clients (client_auth.authenticate_request, bound
# to the request's credentials): the endpoint's first step.
Authenticate = Callable[[Clients], Awaitable[OAuthClient]]
