"""Token introspection (RFC 7662), in the shape of Authlib's IntrospectionEndpoint: who may ask
(``check_permission``), finding the token (``query_token``), and the answer (``introspect_token``).

A token is active only when it is ours, unexpired, unrevoked, issued to the calling client, and its
subject still active (a disabled or deleted user's tokens stop being active at once). An inactive
token is only ``{"active": false}``: nothing tells why (RFC 7662 §2.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from idp.oauth import errors
from idp.oauth.params import single_value
from idp.oauth.resource import BearerProtector, SubjectMapper, UnitOfWorkParties
from idp.oauth.store import Authenticate, OpenUnitOfWork
from idp.oauth.tokens import REFRESH_TOKEN_TYP, TokenInvalid, TokenService
from idp.storage.models import OAuthClient, RefreshToken

__all__ = ("RESPONSE_CLAIMS", "check_permission", "introspect_token", "introspection_request", "query_token")

# RFC 7662 §2.2: what an active token's answer says about it.
RESPONSE_CLAIMS = (
    "scope",
    "client_id",
    "sub",
    "exp",
    "iat",
    "iss",
    "aud",
    "jti",
    "token_type",
    "sid",
    "auth_time",
)

RefreshTokenFinder = Callable[[str], Awaitable[RefreshToken | None]]
SubjectCheck = Callable[[OAuthClient, str], Awaitable[bool]]


def check_permission(client: OAuthClient) -> None:
    # RFC 7662 §2.1: the endpoint requires client authentication; public clients have none.
    if client.client_type == "public":
        raise errors.InvalidClient("Public clients cannot use the introspection endpoint.")


async def _access_token(tokens: TokenService, token: str, client: OAuthClient) -> dict[str, Any] | None:
    try:
        claims = await tokens.verify_access_token(token)
    except TokenInvalid:
        return None
    if claims.get("client_id") != client.id:
        return None  # a client may only introspect its own tokens
    return {**claims, "token_type": "Bearer"}


async def _refresh_token(
    tokens: TokenService, find_refresh_token: RefreshTokenFinder, token: str, client: OAuthClient
) -> dict[str, Any] | None:
    try:
        claims = await tokens.verify_current(token, typ=REFRESH_TOKEN_TYP, audience=tokens.issuer)
    except TokenInvalid:
        return None
    row = await find_refresh_token(str(claims.get("jti")))
    if row is None or row.used_at or row.revoked_at or row.client_id != client.id:
        return None
    return {**claims, "token_type": "refresh_token"}


async def query_token(
    tokens: TokenService,
    find_refresh_token: RefreshTokenFinder,
    token: str,
    hint: str | None,
    client: OAuthClient,
    subject_active: SubjectCheck,
) -> dict[str, Any] | None:
    """The claims of ``token`` when it is active for ``client``; access tokens are tried first
    unless the hint says refresh_token (a hint only orders the search, RFC 7662 §2.1)."""
    kinds = ["access_token", "refresh_token"]
    if hint == "refresh_token":
        kinds.reverse()
    for kind in kinds:
        if kind == "access_token":
            claims = await _access_token(tokens, token, client)
        else:
            claims = await _refresh_token(tokens, find_refresh_token, token, client)
        if claims is not None and await subject_active(client, str(claims.get("sub"))):
            return claims
    return None


async def introspect_token(
    params: Mapping[str, Any],
    client: OAuthClient,
    *,
    tokens: TokenService,
    find_refresh_token: RefreshTokenFinder,
    subject_active: SubjectCheck,
) -> dict[str, Any]:
    """The introspection response for the authenticated ``client``'s request ``params``."""
    check_permission(client)
    token = single_value(params, "token")
    if token is None:
        raise errors.InvalidRequest("token is required")
    hint = single_value(params, "token_type_hint")
    claims = await query_token(tokens, find_refresh_token, token, hint, client, subject_active)
    if claims is None:
        return {"active": False}
    return {"active": True, **{name: claims[name] for name in RESPONSE_CLAIMS if name in claims}}


async def introspection_request(
    units: OpenUnitOfWork,
    tokens: TokenService,
    subjects: SubjectMapper,
    params: Mapping[str, Any],
    authenticate: Authenticate,
) -> dict[str, Any]:
    """The introspection endpoint as one unit of work: the calling client, the refresh token and
    the subject's client and user are read in one database session."""
    async with units() as uow:
        client = await authenticate(uow.clients)
        return await introspect_token(
            params,
            client,
            tokens=tokens,
            find_refresh_token=uow.refresh_tokens.get,
            subject_active=BearerProtector(tokens, subjects, UnitOfWorkParties(uow, cached=True)).subject_active,
        )
