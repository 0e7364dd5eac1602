"""Small in-memory fakes of the narrow things the protocol core asks for, for tests/unit/oauth.

Each fake implements only what one function needs (a token verifier, a client and user look-up,
the authorization decision's services) and records what it was asked, so a test can assert the
side effect as well as the answer. Models are transient ORM objects: never added to a session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from idp.accounts.sessions.store import BrowserSession
from idp.oauth.authorize import AuthorizationRequest
from idp.oauth.interactions import Interaction
from idp.oauth.tokens import IssuedToken
from idp.security.tokens import TokenInvalid
from idp.storage.models import AuthorizationCode, OAuthClient, RefreshToken, User, utcnow
from idp.storage.repositories import SessionFamily

REDIRECT = "https://rp.example/cb"


def make_client(**fields: Any) -> OAuthClient:
    values: dict[str, Any] = {
        "id": "web",
        "name": "Web App",
        "client_type": "confidential",
        "application_type": "web",
        "secret_digest": None,
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [REDIRECT],
        "post_logout_redirect_uris": ["https://rp.example/bye"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scopes": ["openid", "profile", "email", "offline_access"],
        "web_origins": [],
        "id_token_signed_response_alg": None,
        "subject_type": "public",
        "jwks": None,
        "jwks_uri": None,
        "backchannel_logout_uri": None,
        "require_pkce": True,
        "first_party": False,
        "disabled": False,
    }
    values.update(fields)
    return OAuthClient(**values)


def make_user(**fields: Any) -> User:
    values: dict[str, Any] = {
        "id": "user-1",
        "email": "river@example.com",
        "email_normalized": "river@example.com",
        "email_verified": True,
        "name": "River Example",
        "disabled": False,
        "updated_at": utcnow(),
    }
    values.update(fields)
    return User(**values)


def make_session(**fields: Any) -> BrowserSession:
    values: dict[str, Any] = {
        "digest": "digest-1",
        "sid": "sid-1",
        "user_id": "user-1",
        "auth_time": 1_000_000,
        "amr": ["pwd"],
        "acr": "urn:idp:acr:1fa",
        "created_at": 1_000_000,
        "last_seen": 1_000_000,
        "auth_id": "auth-1",
    }
    values.update(fields)
    return BrowserSession(**values)


def make_request(**fields: Any) -> AuthorizationRequest:
    values: dict[str, Any] = {
        "client_id": "web",
        "redirect_uri": REDIRECT,
        "response_mode": "query",
        "scopes": ["openid", "profile"],
        "state": "st",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    values.update(fields)
    return AuthorizationRequest(**values)


def make_interaction(request: AuthorizationRequest | None = None, **fields: Any) -> Interaction:
    values: dict[str, Any] = {
        "id": "interaction-1",
        "request": request or make_request(),
        "created_at": 1_000_000,
        "browser_digest": "browser",
        "prior_auth_id": None,
    }
    values.update(fields)
    return Interaction(**values)


def make_code(**fields: Any) -> AuthorizationCode:
    now = utcnow()
    values: dict[str, Any] = {
        "code_digest": "digest",
        "grant_id": "grant-1",
        "client_id": "web",
        "user_id": "user-1",
        "redirect_uri": REDIRECT,
        "redirect_uri_in_request": True,
        "scope": "openid profile",
        "code_challenge": None,
        "code_challenge_method": None,
        "auth_time": now,
        "amr": ["pwd"],
        "created_at": now,
        "expires_at": now + timedelta(seconds=60),
        "consumed_at": None,
    }
    values.update(fields)
    return AuthorizationCode(**values)


def make_refresh_token(**fields: Any) -> RefreshToken:
    now = utcnow()
    values: dict[str, Any] = {
        "jti": "jti-1",
        "token_digest": "digest",
        "family_id": "grant-1",
        "client_id": "web",
        "user_id": "user-1",
        "scope": "openid profile offline_access",
        "amr": ["pwd"],
        "issued_at": now,
        "expires_at": now + timedelta(days=1),
        "family_expires_at": now + timedelta(days=30),
        "used_at": None,
        "revoked_at": None,
    }
    values.update(fields)
    return RefreshToken(**values)


class FakeTokens:
    """Verifies the tokens it was given (by value), issues numbered tokens (with their grant), and
    keeps the revoked access tokens and grants as TokenService's denylist caches them."""

    def __init__(
        self,
        access: dict[str, dict[str, Any]] | None = None,
        id_tokens: dict[str, dict[str, Any]] | None = None,
        refresh: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.access = dict(access or {})
        self.id_tokens = dict(id_tokens or {})
        self.refresh = dict(refresh or {})
        self.issued: list[IssuedToken] = []
        self.access_token_ttl = 600
        self.issuer = "https://idp.example"
        self.revoked: set[str] = set()
        self.revoked_grants: set[str] = set()
        self.id_tokens_issued: list[dict[str, Any]] = []
        self.refresh_issued: list[dict[str, Any]] = []

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        if token not in self.access:
            raise TokenInvalid("unknown")
        return dict(self.access[token])

    def verify(self, token: str, *, typ: str | None, audience: str | None, check_expiry: bool = True) -> dict[str, Any]:
        """Refresh tokens (the only kind verified this way in the core), registered in ``refresh``."""
        if token not in self.refresh or audience != self.issuer:
            raise TokenInvalid("unknown")
        return dict(self.refresh[token])

    async def verify_current(
        self, token: str, *, typ: str | None, audience: str | None, check_expiry: bool = True
    ) -> dict[str, Any]:
        """The fakes know every key: nothing to reload."""
        return self.verify(token, typ=typ, audience=audience, check_expiry=check_expiry)

    def peek_claims(self, token: str) -> dict[str, Any] | None:
        known = {**self.refresh, **self.access, **self.id_tokens}
        return dict(known[token]) if token in known else None

    def verify_id_token_hint(self, token: str) -> dict[str, Any]:
        if token not in self.id_tokens:
            raise TokenInvalid("unknown")
        return dict(self.id_tokens[token])

    def issue_access_token(
        self, *, subject: str, client_id: str, scope: str, grant_id: str | None = None, **_: Any
    ) -> IssuedToken:
        jti = f"at-{len(self.issued) + 1}"
        claims: dict[str, Any] = {
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "jti": jti,
            "exp": 2_000_000_000,
        }
        if grant_id is not None:
            claims["gid"] = grant_id
        issued = IssuedToken(value=f"token-{jti}", jti=jti, claims=claims)
        self.issued.append(issued)
        return issued

    def issue_id_token(self, **claims: Any) -> str:
        self.id_tokens_issued.append(claims)
        return f"id-token-{len(self.id_tokens_issued)}"

    def issue_refresh_token(self, *, jti: str, **claims: Any) -> str:
        value = f"refresh-{jti}"
        self.refresh_issued.append({"jti": jti, **claims})
        self.refresh[value] = {"jti": jti, **claims}
        return value

    def access_token_end(self, exp: int) -> datetime:
        return datetime.fromtimestamp(exp + 60, UTC)

    def grant_revocation_end(self) -> datetime:
        return utcnow() + timedelta(seconds=self.access_token_ttl + 60)

    async def deny_access_token(self, jti: str, expires_at: datetime) -> None:
        self.revoked.add(jti)

    async def deny_grant(self, grant_id: str, until: datetime) -> None:
        self.revoked_grants.add(grant_id)


class PublicSubjects:
    """Public subjects only: a sub is the user id, for any client."""

    def user_id_for(self, client: OAuthClient | None, subject: str) -> str | None:
        return subject

    def subject_for(self, client: OAuthClient, user_id: str) -> str:
        return user_id


@dataclass
class FakeSessions:
    """The browser sessions a grant asks about, by sid, and the clients each learnt of."""

    live: dict[str, BrowserSession] = field(default_factory=dict)
    clients: dict[str, list[str]] = field(default_factory=dict)

    async def by_sid(self, sid: str) -> BrowserSession | None:
        return self.live.get(sid)

    async def add_client(self, session: BrowserSession, client_id: str, *, within: Any = None) -> None:
        if within is not None:
            await within.join(session.sid, session.user_id, client_id, now=utcnow(), expires_at=utcnow())
        self.clients.setdefault(session.sid, []).append(client_id)


@dataclass
class FakeParties:
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    looked_up: list[str] = field(default_factory=list)

    async def client(self, client_id: str) -> OAuthClient | None:
        self.looked_up.append(f"client:{client_id}")
        return self.clients.get(client_id)

    async def user(self, user_id: str) -> User | None:
        self.looked_up.append(f"user:{user_id}")
        return self.users.get(user_id)

    async def client_and_user(
        self, client_id: str, user_id_for: Callable[[OAuthClient], str | None]
    ) -> tuple[OAuthClient | None, User | None]:
        client = await self.client(client_id)
        user_id = user_id_for(client) if client is not None else None
        return client, (await self.user(user_id) if user_id else None)


@dataclass
class FakeEvents:
    published: list[Any] = field(default_factory=list)

    async def publish(self, event: Any, context: Any = None) -> None:
        self.published.append(event)


# -- in-memory repositories (idp.oauth.store) ---------------------------------------------------------


class _Rows:
    """Rows by primary key, with an undo log: what a unit of work changed is undone when it rolls
    back, as the database would, unless it committed first."""

    def __init__(self, undo: list[Callable[[], None]], rows: Sequence[Any], key: str) -> None:
        self._undo = undo
        self._key = key
        self.rows = {getattr(row, key): row for row in rows}
        self.lookups = 0

    def _get(self, key: str) -> Any:
        self.lookups += 1
        return self.rows.get(key)

    def _add(self, row: Any) -> None:
        key = getattr(row, self._key)
        assert key not in self.rows, f"duplicate primary key {key}"
        self.rows[key] = row
        self._undo.append(lambda: self.rows.pop(key) and None)

    def _set(self, row: Any, **values: Any) -> None:
        before = {name: getattr(row, name) for name in values}

        def undo() -> None:
            for name, value in before.items():
                setattr(row, name, value)

        for name, value in values.items():
            setattr(row, name, value)
        self._undo.append(undo)


class MemoryClients(_Rows):
    # A repository without a cache by default; a test sets this to hold its rows "in memory" as
    # idp's client cache does (client_auth then authenticates them before counting the limits).
    cached = False

    async def get(self, client_id: str) -> OAuthClient | None:
        return cast(OAuthClient | None, self._get(client_id))

    def in_memory(self, client_id: str) -> OAuthClient | None:
        return cast(OAuthClient | None, self.rows.get(client_id)) if self.cached else None


class MemoryUsers(_Rows):
    async def get(self, user_id: str) -> User | None:
        return cast(User | None, self._get(user_id))


class MemoryCodes(_Rows):
    def __init__(self, undo: list[Callable[[], None]], rows: Sequence[Any], key: str, users: MemoryUsers) -> None:
        super().__init__(undo, rows, key)
        self._users = users

    async def spend(self, code_digest: str, client_id: str, at: datetime) -> AuthorizationCode | None:
        row = self._get(code_digest)
        user = None if row is None else self._users.rows.get(row.user_id)
        if row is None or row.consumed_at is not None or row.client_id != client_id or row.expires_at <= at:
            return None
        if user is None or user.disabled:
            return None
        self._set(row, consumed_at=at)
        return cast(AuthorizationCode, row)

    async def add(self, code: AuthorizationCode) -> None:
        self._add(code)

    async def get(self, code_digest: str) -> AuthorizationCode | None:
        return cast(AuthorizationCode | None, self._get(code_digest))

    async def consume(self, code_digest: str, at: datetime) -> bool:
        row = self.rows.get(code_digest)
        if row is None or row.consumed_at is not None:
            return False
        self._set(row, consumed_at=at)
        return True

    async def grants_of(self, user_id: str, client_id: str | None = None) -> set[tuple[str, str]]:
        return {
            (row.grant_id, row.client_id)
            for row in self.rows.values()
            if row.user_id == user_id and client_id in (None, row.client_id)
        }

    async def redeemed_in_session(self, user_id: str, sid: str) -> list[tuple[str, str]]:
        return [
            (row.grant_id, row.client_id)
            for row in self.rows.values()
            if row.user_id == user_id and row.session_id == sid and row.consumed_at is not None
        ]

    async def grants_of_client(self, client_id: str) -> set[tuple[str, str | None]]:
        return {(row.grant_id, row.user_id) for row in self.rows.values() if row.client_id == client_id}


class MemoryRefreshTokens(_Rows):
    def __init__(self, undo: list[Callable[[], None]], rows: Sequence[Any], key: str, users: MemoryUsers) -> None:
        super().__init__(undo, rows, key)
        self._users = users

    async def spend(self, jti: str, token_digest: str, client_id: str, at: datetime) -> RefreshToken | None:
        row = self._get(jti)
        user = None if row is None else self._users.rows.get(row.user_id)
        live = row is not None and row.used_at is None and row.revoked_at is None
        if not live or user is None or user.disabled or (row.token_digest, row.client_id) != (token_digest, client_id):
            return None
        if min(row.expires_at, row.family_expires_at) <= at:
            return None
        self._set(row, used_at=at)
        return cast(RefreshToken, row)

    async def add(self, token: RefreshToken) -> None:
        self._add(token)

    async def get(self, jti: str) -> RefreshToken | None:
        return cast(RefreshToken | None, self._get(jti))

    async def consume(self, jti: str, at: datetime) -> bool:
        row = self.rows.get(jti)
        if row is None or row.used_at is not None or row.revoked_at is not None:
            return False
        self._set(row, used_at=at)
        return True

    async def revoke_family(self, family_id: str, at: datetime) -> None:
        for row in self.rows.values():
            if row.family_id == family_id and row.revoked_at is None:
                self._set(row, revoked_at=at)

    async def live_families_of(self, user_id: str, client_id: str | None = None) -> set[tuple[str, str]]:
        return {
            (row.family_id, row.client_id)
            for row in self.rows.values()
            if row.user_id == user_id and row.revoked_at is None and client_id in (None, row.client_id)
        }

    async def issued_in_session(self, user_id: str, sid: str) -> list[SessionFamily]:
        return [
            SessionFamily(row.family_id, row.client_id, row.scope, row.revoked_at is not None)
            for row in self.rows.values()
            if row.user_id == user_id and row.session_id == sid
        ]

    async def live_families_of_client(self, client_id: str) -> set[tuple[str, str | None]]:
        return {
            (row.family_id, row.user_id)
            for row in self.rows.values()
            if row.client_id == client_id and row.revoked_at is None
        }


class MemoryRevocations:
    """idp.oauth.store.Revocations in memory: the record the denylist is rebuilt from."""

    def __init__(self, undo: list[Callable[[], None]]) -> None:
        self._undo = undo
        self.access_tokens: dict[str, datetime] = {}
        self.grants: dict[str, datetime] = {}

    async def revoke_access_token(self, jti: str, expires_at: datetime, now: datetime) -> None:
        if jti not in self.access_tokens:
            self.access_tokens[jti] = expires_at
            self._undo.append(lambda: self.access_tokens.pop(jti) and None)

    async def revoke_grants(self, grant_ids: Collection[str], expires_at: datetime, now: datetime) -> None:
        before = dict(self.grants)
        self.grants.update(dict.fromkeys(grant_ids, expires_at))
        self._undo.append(lambda: (self.grants.clear(), self.grants.update(before)) and None)

    async def revoked_grants_among(self, grant_ids: Collection[str], now: datetime) -> set[str]:
        return {grant for grant in grant_ids if grant in self.grants and self.grants[grant] > now}


class MemorySessionClients:
    """idp.oauth.store.SessionClients in memory: (sid, client id) -> user id."""

    def __init__(self, undo: list[Callable[[], None]]) -> None:
        self._undo = undo
        self.rows: dict[tuple[str, str], str] = {}

    async def join(self, sid: str, user_id: str, client_id: str, *, now: datetime, expires_at: datetime) -> None:
        self.rows[(sid, client_id)] = user_id
        self._undo.append(lambda: self.rows.pop((sid, client_id)) and None)


class MemoryUnitOfWork:
    """The repositories of idp.oauth.store over rows in memory."""

    def __init__(self, *rows: Any) -> None:
        self.undo: list[Callable[[], None]] = []

        def of(kind: type) -> list[Any]:
            return [row for row in rows if isinstance(row, kind)]

        self.clients = MemoryClients(self.undo, of(OAuthClient), "id")
        self.users = MemoryUsers(self.undo, of(User), "id")
        self.cached_users = self.users
        self.codes = MemoryCodes(self.undo, of(AuthorizationCode), "code_digest", self.users)
        self.refresh_tokens = MemoryRefreshTokens(self.undo, of(RefreshToken), "jti", self.users)
        self.revocations = MemoryRevocations(self.undo)
        self.session_clients = MemorySessionClients(self.undo)
        self.commits = 0

    async def commit(self) -> None:
        self.undo.clear()
        self.commits += 1

    def rollback(self) -> None:
        while self.undo:
            self.undo.pop()()


class MemoryUnits:
    """``OpenUnitOfWork`` over one in-memory store: every unit sees the same rows; each commits
    when its block ends normally and rolls back (undoes what it changed) otherwise."""

    def __init__(self, *rows: Any) -> None:
        self.store = MemoryUnitOfWork(*rows)
        self.opened = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[MemoryUnitOfWork]:
        self.opened += 1
        try:
            yield self.store
        except BaseException:
            self.store.rollback()
            raise
        await self.store.commit()


@dataclass
class FakeAuthorizationServices:
    """interaction_policy.AuthorizationServices in memory, recording every side effect."""

    users: dict[str, User] = field(default_factory=dict)
    id_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    second_factor: set[str] = field(default_factory=set)
    consents: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    open_interactions: set[str] = field(default_factory=set)
    registration_enabled: bool = True
    ended_sessions: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    codes: list[dict[str, Any]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def read_id_token_hint(self, hint: str) -> dict[str, Any] | None:
        return self.id_tokens.get(hint)

    def user_id_for(self, client: OAuthClient | None, subject: str) -> str | None:
        if client is not None and client.subject_type == "pairwise":
            return subject.removeprefix("pairwise-")
        return subject

    async def load_user(self, user_id: str) -> User | None:
        return self.users.get(user_id)

    async def end_session(self, session: BrowserSession) -> None:
        self.ended_sessions.append(session.sid)

    async def has_second_factor(self, user_id: str) -> bool:
        self.asked.append(f"second_factor:{user_id}")
        return user_id in self.second_factor

    async def granted_scopes(self, user_id: str, client_id: str) -> set[str]:
        self.asked.append(f"consent:{user_id}:{client_id}")
        return set(self.consents.get((user_id, client_id), set()))

    async def grant_consent(self, user_id: str, client_id: str, scopes: Sequence[str]) -> None:
        self.consents.setdefault((user_id, client_id), set()).update(scopes)

    async def finish_interaction(self, interaction_id: str) -> bool:
        self.finished.append(interaction_id)
        if interaction_id not in self.open_interactions:
            return False
        self.open_interactions.discard(interaction_id)
        return True

    async def issue_code(self, request: AuthorizationRequest, user: User, session: BrowserSession, acr: str) -> str:
        self.codes.append({"client_id": request.client_id, "user_id": user.id, "sid": session.sid, "acr": acr})
        return f"code-{len(self.codes)}"
