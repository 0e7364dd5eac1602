"""Small in-memory fakes of the narrow things the protocol core asks for, for tests/unit/oauth.

Each fake implements only what one function needs (a token verifier, a client and user look-up,
the authorization decision's services) and records what it was asked, so a test can assert the
side effect as well as the answer. Models are transient ORM objects: never added to a session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from idp.accounts.sessions.store import BrowserSession
from idp.oauth.authorize import AuthorizationRequest
from idp.oauth.interactions import Interaction
from idp.oauth.tokens import IssuedToken
from idp.security.tokens import TokenInvalid
from idp.storage.models import AuthorizationCode, OAuthClient, RefreshToken, User, utcnow

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
    """Verifies the tokens it was given (by value) and issues numbered access tokens."""

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

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        if token not in self.access:
            raise TokenInvalid("unknown")
        return dict(self.access[token])

    def verify(self, token: str, *, typ: str | None, audience: str | None, check_expiry: bool = True) -> dict[str, Any]:
        """Refresh tokens (the only kind verified this way in the core), registered in ``refresh``."""
        if token not in self.refresh or audience != self.issuer:
            raise TokenInvalid("unknown")
        return dict(self.refresh[token])

    def peek_claims(self, token: str) -> dict[str, Any] | None:
        known = {**self.refresh, **self.access, **self.id_tokens}
        return dict(known[token]) if token in known else None

    def verify_id_token_hint(self, token: str) -> dict[str, Any]:
        if token not in self.id_tokens:
            raise TokenInvalid("unknown")
        return dict(self.id_tokens[token])

    def issue_access_token(self, *, subject: str, client_id: str, scope: str, **_: Any) -> IssuedToken:
        jti = f"at-{len(self.issued) + 1}"
        claims = {"sub": subject, "client_id": client_id, "scope": scope, "jti": jti, "exp": 2_000_000_000}
        issued = IssuedToken(value=f"token-{jti}", jti=jti, claims=claims)
        self.issued.append(issued)
        return issued


class PublicSubjects:
    """Public subjects only: a sub is the user id, for any client."""

    def user_id_for(self, client: OAuthClient | None, subject: str) -> str | None:
        return subject


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


class FakeDatabase:
    """``Database.session()`` for code that only reads rows by primary key (``session.get``)."""

    def __init__(self, *rows: Any) -> None:
        self.rows = {(type(row), _primary_key(row)): row for row in rows}
        self.sessions = 0

    @asynccontextmanager
    async def session(self) -> Any:
        self.sessions += 1
        yield self

    async def get(self, model: type, key: str) -> Any:
        return self.rows.get((model, key))


def _primary_key(row: Any) -> str:
    return str(getattr(row, "id", None) or getattr(row, "jti", None) or row.code_digest)


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
