"""The bearer-token protector of this IdP's own resources (RFC 6750, RFC 9068): UserInfo, the
subject check of introspection, and the account API.

Four steps, each usable alone: take the token from the request (``bearer_token``: RFC 6750 §2),
verify it (``BearerProtector.verify``: one of our access tokens, not revoked), check its scopes,
and find who it speaks for (``BearerProtector.caller``: the client and the user behind its
``sub``, pairwise or not, both still enabled). ``BearerProtector.authenticate`` runs them in order.
Errors are the RFC 6750 ones of ``idp.errors`` (401 with a ``WWW-Authenticate: Bearer``
challenge, 403 for a missing scope). No Quart here: the route passes the Authorization header
values and, where the endpoint accepts one, the form body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from idp.errors import BearerTokenMissing, InsufficientScope, InvalidToken
from idp.oauth import errors
from idp.oauth.params import single_header, single_value
from idp.oauth.store import OpenUnitOfWork, UnitOfWork
from idp.security.tokens import TokenInvalid
from idp.storage.models import OAuthClient, User

__all__ = (
    "BearerGrant",
    "BearerProtector",
    "StoredParties",
    "TokenParties",
    "bearer_token",
)

GONE = "The user or client of this token no longer exists or is disabled."


@dataclass(frozen=True)
class BearerGrant:
    """What a valid access token proves: the user it speaks for, the client it was issued to, and
    what it may do."""

    claims: dict[str, Any]
    scopes: frozenset[str]
    client: OAuthClient
    user: User

    @property
    def subject(self) -> str:
        """The ``sub`` as the client knows it (pairwise or public), not the user id."""
        return str(self.claims["sub"])


def bearer_token(authorization: Sequence[str], form: Mapping[str, Any] | None = None) -> str:
    """The access token of a request: in the one Authorization header (RFC 6750 §2.1) or, where
    the endpoint reads a form-encoded body (``form``), its ``access_token`` (§2.2), never both.
    Query strings are never read (§2.3: they end up in logs and histories)."""
    header = single_header(authorization)
    form_token = single_value(form, "access_token") if form is not None else None  # RFC 6749 §3.2
    if header and form_token:
        raise errors.InvalidRequest("Send the access token in one place only (RFC 6750 §2).")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidToken("The Authorization header must be a Bearer token.")
        return value.strip()
    if form_token:
        return form_token
    # RFC 6750 §3.1: no error code when the request carried no token at all.
    raise BearerTokenMissing()


class AccessTokenVerifier(Protocol):
    async def verify_access_token(self, token: str) -> dict[str, Any]: ...


class SubjectMapper(Protocol):
    def user_id_for(self, client: OAuthClient | None, subject: str) -> str | None: ...


class TokenParties(Protocol):
    """The look-ups the protector needs: a client and a user, each by id (None if unknown), and
    both for one token at once (one database round trip on the hot path of every resource call)."""

    async def client(self, client_id: str) -> OAuthClient | None: ...

    async def user(self, user_id: str) -> User | None: ...

    async def client_and_user(
        self, client_id: str, user_id_for: Callable[[OAuthClient], str | None]
    ) -> tuple[OAuthClient | None, User | None]:
        """The client, and the user ``user_id_for(client)`` names (the subject resolves only
        once the client is known: pairwise subjects are per client)."""
        ...


class StoredParties:
    """TokenParties from the database: each look-up its own unit of work. ``cached``: accounts
    come from memory where they are cached (UserInfo and introspection: only read, never changed
    by the request)."""

    def __init__(self, units: OpenUnitOfWork, *, cached: bool = False) -> None:
        self._units = units
        self._cached = cached

    async def client(self, client_id: str) -> OAuthClient | None:
        async with self._units() as uow:
            return await uow.clients.get(client_id)

    async def user(self, user_id: str) -> User | None:
        async with self._units() as uow:
            return await UnitOfWorkParties(uow, cached=self._cached).user(user_id)

    async def client_and_user(
        self, client_id: str, user_id_for: Callable[[OAuthClient], str | None]
    ) -> tuple[OAuthClient | None, User | None]:
        async with self._units() as uow:
            return await UnitOfWorkParties(uow, cached=self._cached).client_and_user(client_id, user_id_for)


class UnitOfWorkParties:
    """TokenParties read in a unit of work the caller holds open (introspection's subject check
    shares the request's database session); ``cached`` as for :class:`StoredParties`."""

    def __init__(self, uow: UnitOfWork, *, cached: bool = False) -> None:
        self._uow = uow
        self._users = uow.cached_users if cached else uow.users

    async def client(self, client_id: str) -> OAuthClient | None:
        return await self._uow.clients.get(client_id)

    async def user(self, user_id: str) -> User | None:
        return await self._users.get(user_id)

    async def client_and_user(
        self, client_id: str, user_id_for: Callable[[OAuthClient], str | None]
    ) -> tuple[OAuthClient | None, User | None]:
        client = await self._uow.clients.get(client_id)
        user_id = user_id_for(client) if client is not None else None
        user = await self._users.get(user_id) if user_id else None
        return client, user


def _needs(scopes: Sequence[str]) -> str:
    return f"This request needs the scopes: {' '.join(scopes)}."


class BearerProtector:
    def __init__(self, tokens: AccessTokenVerifier, subjects: SubjectMapper, parties: TokenParties) -> None:
        self._tokens = tokens
        self._subjects = subjects
        self._parties = parties

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of one of our unexpired, unrevoked access tokens (``at+jwt``), else InvalidToken."""
        try:
            return await self._tokens.verify_access_token(token)
        except TokenInvalid:
            raise InvalidToken() from None

    @staticmethod
    def require_scopes(
        claims: Mapping[str, Any], scopes: Sequence[str], description: str | None = None
    ) -> frozenset[str]:
        """The token's scopes, which must include ``scopes`` (RFC 6750 §3.1 insufficient_scope)."""
        granted = frozenset(str(claims.get("scope", "")).split())
        if not set(scopes) <= granted:
            raise InsufficientScope(description or _needs(scopes), scope=" ".join(scopes))
        return granted

    async def active_user(self, client: OAuthClient, subject: str) -> User | None:
        """The enabled user behind ``subject`` as issued to ``client`` (OIDC Core §8: a pairwise
        ``sub`` resolves only for the sector it was made for); None if there is none."""
        user_id = self._subjects.user_id_for(client, subject)
        user = await self._parties.user(user_id) if user_id else None
        return None if user is None or user.disabled else user

    async def subject_active(self, client: OAuthClient, subject: str) -> bool:
        """Whether a token of ``client`` about ``subject`` still speaks for someone: its user is
        enabled, or (client_credentials, where the subject is the client itself) its client is."""
        if subject == client.id:
            return not client.disabled
        return await self.active_user(client, subject) is not None

    async def caller(self, claims: dict[str, Any]) -> tuple[OAuthClient, User]:
        """The enabled client and user of verified ``claims``; InvalidToken when either is gone."""
        subject = str(claims.get("sub"))
        client, user = await self._parties.client_and_user(
            str(claims.get("client_id")), lambda found: self._subjects.user_id_for(found, subject)
        )
        if client is None or client.disabled or user is None or user.disabled:
            raise InvalidToken(GONE)
        return client, user

    async def authenticate(
        self,
        authorization: Sequence[str],
        form: Mapping[str, Any] | None = None,
        *,
        scopes: Sequence[str] = (),
        scope_description: str | None = None,
        client_policy: Callable[[OAuthClient], None] | None = None,
        check_scopes_first: bool = True,
    ) -> BearerGrant:
        """The grant of the request's bearer token, which must carry ``scopes``.

        ``client_policy`` may refuse a client that is enabled but not allowed here (it raises).
        By default the scopes are checked before anything is looked up (the token alone decides);
        with ``check_scopes_first=False`` who calls (the client and user, then ``client_policy``)
        is settled before what the token allows."""
        claims = await self.verify(bearer_token(authorization, form))
        granted = self.require_scopes(claims, scopes, scope_description) if check_scopes_first else None
        client, user = await self.caller(claims)
        if client_policy is not None:
            client_policy(client)
        if granted is None:
            granted = self.require_scopes(claims, scopes, scope_description)
        return BearerGrant(claims=claims, scopes=granted, client=client, user=user)
