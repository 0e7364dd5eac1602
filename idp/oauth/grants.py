"""Token endpoint grants (RFC 6749 §4.1.3, §6, §4.4), in a registry keyed by grant_type.

Each grant is a short sequence of named checks followed by ``issue_tokens``. One-time artefacts
are consumed atomically; presenting a used code or refresh token revokes everything issued from
the same authorization (RFC 9700 §4.2.4, §4.14.2).
"""

from __future__ import annotations

import abc
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, NoReturn

from idp.accounts.sessions.store import BrowserSession, SessionStore
from idp.config import TokenSettings
from idp.events import EventBus, TokenIssued, TokenRevoked
from idp.oauth import errors, pkce
from idp.oauth.params import single_value
from idp.oauth.scopes import OFFLINE_ACCESS, OPENID, USER_SCOPES
from idp.oauth.store import Authenticate, OpenUnitOfWork, UnitOfWork
from idp.oauth.subjects import SubjectResolver
from idp.oauth.tokens import REFRESH_TOKEN_TYP, TokenInvalid, TokenService
from idp.security.tokens import random_token, sha256_digest
from idp.storage.models import AuthorizationCode, OAuthClient, RefreshToken, User, utcnow


@dataclass
class GrantContext:
    # Each token request, and each revocation, is one unit of work (idp.oauth.store).
    units: OpenUnitOfWork
    tokens: TokenService
    sessions: SessionStore
    subjects: SubjectResolver
    events: EventBus
    settings: TokenSettings
    # [sessions] end_revokes_refresh_tokens: what an ended session takes with it.
    session_end_revokes: str = "online"

    def outlives_session(self, client: OAuthClient, scope: str) -> bool:
        """Whether a grant of ``scope`` survives the end of the session it was made in: never with
        "all", always with "none"; with "online" only an offline_access grant that yields refresh
        tokens (OIDC Core §11), as revoke_session_grants decides."""
        if self.session_end_revokes == "none":
            return True
        return (
            self.session_end_revokes == "online"
            and OFFLINE_ACCESS in scope.split()
            and "refresh_token" in client.grant_types
        )


def _form_value(form: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = single_value(form, name)  # RFC 6749 §3.2: never repeated
    if value is None and required:
        raise errors.InvalidRequest(f"{name} is required")
    return value


def _as_timestamp(value: datetime) -> int:
    return int(value.timestamp())


async def revoke_grant(
    ctx: GrantContext,
    grant_id: str,
    *,
    client_id: str,
    user_id: str | None,
    reason: str,
    within: UnitOfWork | None = None,
) -> None:
    """Revoke every refresh token of an authorization and every access token issued from it.

    ``within`` is the unit of work of a token request that found a replay: the revocation is
    committed there, before the request fails, so the refusal can't undo it."""
    await revoke_grants(ctx, {(grant_id, client_id)}, user_id=user_id, reason=reason, within=within)


async def revoke_grants(
    ctx: GrantContext,
    grants: set[tuple[str, str]],
    *,
    user_id: str | None,
    reason: str,
    within: UnitOfWork | None = None,
) -> None:
    """Revoke each (grant id, client id): its refresh tokens and the record of its revocation in
    one committed unit of work, then the key-value cache of it (its access tokens carry the grant
    id, so they are refused), then one TokenRevoked event a grant. The record comes first: a
    revocation the database did not take fails (DatabaseUnavailable) rather than half-happens."""
    now = utcnow()
    until = ctx.tokens.grant_revocation_end()
    grant_ids = {grant_id for grant_id, _ in grants}
    if within is None:
        async with ctx.units() as uow:
            for grant_id in grant_ids:
                await uow.refresh_tokens.revoke_family(grant_id, now)
            await uow.revocations.revoke_grants(grant_ids, until, now)
    else:
        for grant_id in grant_ids:
            await within.refresh_tokens.revoke_family(grant_id, now)
        await within.revocations.revoke_grants(grant_ids, until, now)
        await within.commit()
    for grant_id, client_id in grants:
        await ctx.tokens.deny_grant(grant_id, until)
        revoked = TokenRevoked(client=client_id, user_id=user_id, reason=reason, token_type="grant")  # noqa: S106
        await ctx.events.publish(revoked)


@dataclass(frozen=True)
class IssuedTokens:
    response: dict[str, Any]
    # Published by the caller once its unit of work has committed.
    event: TokenIssued


async def issue_tokens(
    ctx: GrantContext,
    unit_of_work: UnitOfWork,
    client: OAuthClient,
    user_id: str,
    *,
    grant_type: str,
    scope: str,
    grant_id: str,
    sid: str | None,
    auth_time: int | None,
    amr: list[str],
    acr: str | None,
    nonce: str | None = None,
    family_expires_at: datetime | None = None,
    parent_jti: str | None = None,
    refresh_scope: str | None = None,
) -> IssuedTokens:
    """Access token (and ID token) for ``scope``; the refresh token carries ``refresh_scope``
    (default ``scope``): RFC 6749 §6, a rotated refresh token keeps the scope of the one presented
    even when the client asked for a narrower access token.

    The refresh token row is added to ``unit_of_work``, the transaction that consumed the code or
    the parent refresh token, so a concurrent replay can't revoke the grant between the two and
    miss what this call issues (RFC 6749 §10.5, RFC 9700 §4.14.2)."""
    scopes = scope.split()
    refresh_scope = refresh_scope or scope
    subject = ctx.subjects.subject_for(client, user_id)
    access = ctx.tokens.issue_access_token(
        subject=subject,
        client_id=client.id,
        scope=scope,
        auth_time=auth_time,
        acr=acr,
        amr=amr,
        sid=sid,
        grant_id=grant_id,
    )
    response: dict[str, Any] = {
        "access_token": access.value,
        "token_type": "Bearer",
        "expires_in": ctx.tokens.access_token_ttl,
        "scope": scope,
    }
    if OPENID in scopes:
        response["id_token"] = ctx.tokens.issue_id_token(
            subject=subject,
            client_id=client.id,
            alg=client.id_token_signed_response_alg,
            auth_time=auth_time,
            nonce=nonce,
            acr=acr,
            amr=amr,
            sid=sid,
            access_token=access.value,
        )
    issue_refresh = "refresh_token" in client.grant_types
    if issue_refresh:
        now = utcnow()
        family_end = family_expires_at or now + timedelta(seconds=ctx.settings.refresh_token_ttl)
        expires_at = min(now + timedelta(seconds=ctx.settings.refresh_token_idle_ttl), family_end)
        jti = random_token(16)
        refresh = ctx.tokens.issue_refresh_token(
            jti=jti,
            subject=subject,
            client_id=client.id,
            scope=refresh_scope,
            expires_at=_as_timestamp(expires_at),
            sid=sid,
        )
        await unit_of_work.refresh_tokens.add(
            RefreshToken(
                jti=jti,
                token_digest=sha256_digest(refresh),
                family_id=grant_id,
                parent_jti=parent_jti,
                client_id=client.id,
                user_id=user_id,
                scope=refresh_scope,
                session_id=sid,
                auth_time=datetime.fromtimestamp(auth_time, UTC) if auth_time is not None else None,
                acr=acr,
                amr=list(amr),
                issued_at=now,
                expires_at=expires_at,
                family_expires_at=family_end,
            )
        )
        response["refresh_token"] = refresh
    event = TokenIssued(
        client=client.id, grant_type=grant_type, user_id=user_id, scope=scope, refresh_token=issue_refresh
    )
    return IssuedTokens(response, event)


async def _active_user(unit_of_work: UnitOfWork, user_id: str) -> User | None:
    user = await unit_of_work.users.get(user_id)
    return None if user is None or user.disabled else user


def _inactive_user() -> errors.InvalidGrant:
    return errors.InvalidGrant("The user of this grant no longer exists or is disabled.")


class Grant(abc.ABC):
    grant_type: ClassVar[str]

    def __init__(self, ctx: GrantContext, uow: UnitOfWork, client: OAuthClient, form: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.uow = uow
        self.client = client
        self.form = form

    async def revoke_replayed(self, grant_id: str, row: AuthorizationCode | RefreshToken, *, reason: str) -> None:
        """Revoke the grant a replayed code or refresh token came from, committed in this request's
        unit of work before the request fails (the refusal must not undo it)."""
        await revoke_grant(
            self.ctx, grant_id, client_id=row.client_id, user_id=row.user_id, reason=reason, within=self.uow
        )

    @abc.abstractmethod
    async def handle(self) -> IssuedTokens:
        """Validate the grant-specific parameters and issue the tokens in ``uow``; the caller
        commits, then publishes the event."""


class AuthorizationCodeGrant(Grant):
    grant_type = "authorization_code"

    async def handle(self) -> IssuedTokens:
        code = _form_value(self.form, "code")
        assert code is not None
        if len(code) > 256:
            raise errors.InvalidGrant("The authorization code is invalid.")
        digest, now = sha256_digest(code), utcnow()
        # Consuming the code and storing what it yields is one transaction: a concurrent replay
        # waits on the code's row and then revokes the grant with these tokens in it. The first
        # statement spends the code only if it may be redeemed (issue 14: no reads before it); a
        # refusal below rolls the spending back, so the code stays unspent.
        row = await self.uow.codes.spend(digest, self.client.id, now)
        if row is None:
            await self.refuse(digest, now)
        self.check_redirect_uri(row)
        self.check_pkce(row)
        session = await self.check_session(row)
        if session is not None:
            # The session learns the client got tokens (back-channel logout notifies it).
            await self.ctx.sessions.add_client(session, self.client.id, within=self.uow.session_clients)
        return await issue_tokens(
            self.ctx,
            self.uow,
            self.client,
            row.user_id,
            grant_type=self.grant_type,
            scope=row.scope,
            grant_id=row.grant_id,
            sid=row.session_id,
            auth_time=_as_timestamp(row.auth_time),
            amr=list(row.amr),
            acr=row.acr,
            nonce=row.nonce,
        )

    async def refuse(self, digest: str, now: datetime) -> NoReturn:
        """Why a code could not be spent, in the order a client is told: unknown, another
        client's, expired, the wrong redirect_uri or verifier, its session ended, redeemed
        before (the grant is revoked), its user inactive (the code is spent)."""
        row = await self.uow.codes.get(digest)
        if row is None:
            raise errors.InvalidGrant("The authorization code is invalid.")
        self.check_client(row)
        self.check_expiry(row)
        self.check_redirect_uri(row)
        self.check_pkce(row)
        if row.consumed_at is None:
            await self.check_session(row)
        if not await self.uow.codes.consume(row.code_digest, now):
            # Replay: the first redemption may have been an attacker's, or this one is.
            await self.revoke_replayed(row.grant_id, row, reason="code_replay")
            raise errors.InvalidGrant("The authorization code has already been used.")
        if await _active_user(self.uow, row.user_id) is None:
            await self.uow.commit()  # the code stays spent
            raise _inactive_user()
        # Redeemable when read here: it changed between the two statements; nothing is kept.
        raise errors.InvalidGrant("The authorization code could not be used; try again.")

    async def check_session(self, row: AuthorizationCode) -> BrowserSession | None:
        """The session the code was issued in. If it has ended since (logout, ended elsewhere,
        expired), the code yields nothing that its end would have revoked: the tokens would
        otherwise outlive the logout by the code's lifetime (ASVS 7.4.1)."""
        if not row.session_id:
            return None
        session = await self.ctx.sessions.by_sid(row.session_id)
        if session is None and not self.ctx.outlives_session(self.client, row.scope):
            raise errors.InvalidGrant("The sign-in session this code was issued in has ended.")
        return session

    def check_client(self, row: AuthorizationCode) -> None:
        # RFC 6749 §4.1.3: the code must have been issued to the authenticated client.
        if row.client_id != self.client.id:
            raise errors.InvalidGrant("The authorization code was issued to another client.")

    def check_expiry(self, row: AuthorizationCode) -> None:
        if row.expires_at <= utcnow():
            raise errors.InvalidGrant("The authorization code has expired.")

    def check_redirect_uri(self, row: AuthorizationCode) -> None:
        # RFC 6749 §4.1.3: REQUIRED if the authorization request included it, and then identical.
        # A request that left it out had a single registered URI (§3.1.2.3); the code is bound to it.
        given = _form_value(self.form, "redirect_uri", required=False)
        if given is None:
            if row.redirect_uri_in_request:
                raise errors.InvalidRequest("redirect_uri is required: the authorization request included it")
            return
        if given != row.redirect_uri:
            raise errors.InvalidGrant("redirect_uri does not match the authorization request.")

    def check_pkce(self, row: AuthorizationCode) -> None:
        pkce.check_verifier(_form_value(self.form, "code_verifier", required=False), row.code_challenge)


class RefreshTokenGrant(Grant):
    grant_type = "refresh_token"

    async def handle(self) -> IssuedTokens:
        token = _form_value(self.form, "refresh_token")
        assert token is not None
        jti = await self.jti_of(token)
        now = utcnow()
        # Rotation is one transaction (see AuthorizationCodeGrant.handle), and its first statement
        # spends the token only if it may be rotated: a concurrent reuse of the same token can't
        # revoke the family between the rotation and its new token. Two round trips besides the
        # transaction's own (issue 14).
        row = await self.uow.refresh_tokens.spend(jti, sha256_digest(token), self.client.id, now)
        if row is None:
            await self.refuse(jti, token, now)
        scope = self.narrowed_scope(row)  # a refusal rolls the spending back
        return await issue_tokens(
            self.ctx,
            self.uow,
            self.client,
            row.user_id,
            grant_type=self.grant_type,
            scope=scope,
            grant_id=row.family_id,
            sid=row.session_id,
            auth_time=_as_timestamp(row.auth_time) if row.auth_time else None,
            amr=list(row.amr),
            acr=row.acr,
            family_expires_at=row.family_expires_at,
            parent_jti=row.jti,
            refresh_scope=row.scope,
        )

    async def jti_of(self, token: str) -> str:
        try:
            claims = await self.ctx.tokens.verify_current(
                token, typ=REFRESH_TOKEN_TYP, audience=self.ctx.tokens.issuer, check_expiry=False
            )
        except TokenInvalid:
            raise errors.InvalidGrant("The refresh token is invalid.") from None
        return str(claims.get("jti"))

    async def refuse(self, jti: str, token: str, now: datetime) -> NoReturn:
        """Why a token could not be spent, in the order a client is told: unknown, another
        client's, revoked, used before (the family is revoked), expired, its user inactive."""
        row = await self.uow.refresh_tokens.get(jti)
        if row is None or not hmac.compare_digest(row.token_digest, sha256_digest(token)):
            raise errors.InvalidGrant("The refresh token is invalid.")
        if row.client_id != self.client.id:
            raise errors.InvalidGrant("The refresh token was issued to another client.")
        if row.revoked_at is not None:
            raise errors.InvalidGrant("The refresh token has been revoked.")
        if row.used_at is not None:
            await self.detect_reuse(row)
        if row.expires_at <= now or row.family_expires_at <= now:
            raise errors.InvalidGrant("The refresh token has expired.")
        if await _active_user(self.uow, row.user_id) is None and await self.uow.refresh_tokens.consume(row.jti, now):
            await self.uow.commit()  # the token stays spent
            raise _inactive_user()
        # Live when read here: it changed between the two statements (PostgreSQL READ COMMITTED).
        raise errors.InvalidGrant("The refresh token could not be used; try again.")

    async def detect_reuse(self, row: RefreshToken) -> NoReturn:
        # RFC 9700 §4.14.2: an already-rotated token means it leaked to someone; end the family.
        await self.revoke_replayed(row.family_id, row, reason="refresh_token_reuse")
        raise errors.InvalidGrant("The refresh token has already been used; the grant has been revoked.")

    def narrowed_scope(self, row: RefreshToken) -> str:
        requested = _form_value(self.form, "scope", required=False)
        if requested is None:
            return row.scope
        granted = row.scope.split()
        wanted = list(dict.fromkeys(requested.split()))
        if not set(wanted) <= set(granted):
            raise errors.InvalidScope("The requested scope exceeds the scope originally granted.")
        return " ".join(wanted)


class ClientCredentialsGrant(Grant):
    grant_type = "client_credentials"

    async def handle(self) -> IssuedTokens:
        if self.client.client_type != "confidential":
            raise errors.UnauthorizedClient("Only confidential clients may use client_credentials.")
        requested = _form_value(self.form, "scope", required=False)
        allowed = [scope for scope in self.client.scopes if scope not in USER_SCOPES]
        scopes = list(dict.fromkeys(requested.split())) if requested else allowed
        refused = [scope for scope in scopes if scope not in allowed]
        if refused:
            raise errors.InvalidScope(f"scope not allowed for client_credentials: {' '.join(refused)}")
        scope = " ".join(scopes)
        access = self.ctx.tokens.issue_access_token(subject=self.client.id, client_id=self.client.id, scope=scope)
        response = {
            "access_token": access.value,
            "token_type": "Bearer",
            "expires_in": self.ctx.tokens.access_token_ttl,
            "scope": scope,
        }
        event = TokenIssued(
            client=self.client.id, grant_type=self.grant_type, user_id=None, scope=scope, refresh_token=False
        )
        return IssuedTokens(response, event)


GRANTS: dict[str, type[Grant]] = {
    grant.grant_type: grant for grant in (AuthorizationCodeGrant, RefreshTokenGrant, ClientCredentialsGrant)
}


async def token_response(ctx: GrantContext, form: Mapping[str, Any], authenticate: Authenticate) -> dict[str, Any]:
    """The token endpoint (RFC 6749 §3.2) as one unit of work: authenticate the client, run its
    grant, commit; then announce what was issued (the audit trail writes on its own)."""
    async with ctx.units() as uow:
        client = await authenticate(uow.clients)
        issued = await handle_token_request(ctx, uow, client, form)
    await ctx.events.publish(issued.event)
    return issued.response


async def handle_token_request(
    ctx: GrantContext, uow: UnitOfWork, client: OAuthClient, form: Mapping[str, Any]
) -> IssuedTokens:
    grant_type = _form_value(form, "grant_type")
    assert grant_type is not None
    grant_class = GRANTS.get(grant_type)
    if grant_class is None:
        raise errors.UnsupportedGrantType(f"grant_type {grant_type[:50]!r} is not supported.")
    if grant_type not in client.grant_types:
        raise errors.UnauthorizedClient(f"This client may not use the {grant_type} grant.")
    return await grant_class(ctx, uow, client, form).handle()


async def revoke_user_client_grants(ctx: GrantContext, user_id: str, client_id: str | None, *, reason: str) -> int:
    """Revoke every authorization a user gave a client (or every client, with None): refresh-token
    families and the access tokens issued from them or straight from codes (codes are kept a
    day past expiry, longer than any access token lives)."""
    async with ctx.units() as uow:
        grants = await uow.refresh_tokens.live_families_of(user_id, client_id)
        grants |= await uow.codes.grants_of(user_id, client_id)
        await revoke_grants(ctx, grants, user_id=user_id, reason=reason, within=uow)
    return len(grants)


async def revoke_client_grants(ctx: GrantContext, client_id: str, *, reason: str) -> int:
    """Revoke every grant of a client (before it is deleted): refresh-token families, and the
    access tokens issued from them or straight from codes. How many grants were revoked."""
    async with ctx.units() as uow:
        grants = await uow.refresh_tokens.live_families_of_client(client_id)
        grants |= await uow.codes.grants_of_client(client_id)
        by_user: dict[str | None, set[tuple[str, str]]] = {}
        for grant_id, user_id in grants:
            by_user.setdefault(user_id, set()).add((grant_id, client_id))
        for user_id, of_user in by_user.items():
            await revoke_grants(ctx, of_user, user_id=user_id, reason=reason, within=uow)
    return len(grants)


async def revoke_session_grants(ctx: GrantContext, user_id: str, sid: str, *, keep_offline: bool, reason: str) -> int:
    """Revoke the grants issued within the IdP session ``sid``: their refresh tokens and their
    access tokens (ASVS 7.4.1, 7.4.3). With ``keep_offline``, grants whose refresh tokens carry
    offline_access are kept (OIDC Core §11: meant to outlive the sign-in); a grant that never
    yielded a refresh token keeps nothing offline, so its access tokens go whatever its scope.
    Grants revoked before (their refresh tokens revoked, or the grant itself) are not revoked
    again. Returns how many grants were revoked."""
    async with ctx.units() as uow:
        families = await uow.refresh_tokens.issued_in_session(user_id, sid)
        # Code-only grants: their access tokens carry the grant_id of the code that started them.
        redeemed = await uow.codes.redeemed_in_session(user_id, sid)
        with_refresh_tokens = {row.family_id for row in families}
        grants = {
            (row.family_id, row.client_id)
            for row in families
            if not row.revoked and not (keep_offline and OFFLINE_ACCESS in row.scope.split())
        }
        code_only = {(grant, owner) for grant, owner in redeemed if grant not in with_refresh_tokens}
        revoked_before = await uow.revocations.revoked_grants_among({grant for grant, _ in code_only}, utcnow())
        grants |= {(grant, owner) for grant, owner in code_only if grant not in revoked_before}
        await revoke_grants(ctx, grants, user_id=user_id, reason=reason, within=uow)
    return len(grants)
