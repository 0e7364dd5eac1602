"""Token revocation (RFC 7009): a client revokes one of its own tokens.

Revoking a refresh token ends its whole grant: the refresh-token family and every access token
issued from it (RFC 7009 §2.1 "SHOULD also invalidate"). An access token is put on the
deny-list until it would have expired anyway: recorded in the database in the request's unit of
work and committed before the key-value store caches it, so a revocation the database could not
take answers 503 (DatabaseUnavailable) and is never reported done. An invalid or unknown token
needs no error (§2.2): the answer is the same 200 as for a revoked one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idp.events import TokenRevoked
from idp.oauth import errors
from idp.oauth.grants import GrantContext, revoke_grant
from idp.oauth.params import single_value
from idp.oauth.store import Authenticate, UnitOfWork
from idp.storage.models import OAuthClient, utcnow

__all__ = ("TOKEN_TYPE_HINTS", "revocation_request", "revoke_token")

# RFC 7009 §2.1; the hint only speeds up the search, so a wrong one is not an error.
TOKEN_TYPE_HINTS = ("access_token", "refresh_token")


async def revocation_request(grants: GrantContext, params: Mapping[str, Any], authenticate: Authenticate) -> None:
    """The revocation endpoint (RFC 7009 §2.1) as one unit of work: authenticate, then revoke."""
    async with grants.units() as uow:
        client = await authenticate(uow.clients)
        await revoke_token(params, client, grants=grants, uow=uow)


async def revoke_token(
    params: Mapping[str, Any], client: OAuthClient, *, grants: GrantContext, uow: UnitOfWork
) -> None:
    """Revoke the token named in the authenticated ``client``'s request ``params``."""
    token = single_value(params, "token")
    if token is None:
        raise errors.InvalidRequest("token is required")
    hint = single_value(params, "token_type_hint")
    if hint is not None and hint not in TOKEN_TYPE_HINTS:
        raise errors.UnsupportedTokenType(f"token_type_hint {hint[:40]!r} is not supported")
    claims = grants.tokens.peek_claims(token)
    if claims is None:
        return  # RFC 7009 §2.2: invalid tokens need no error
    if claims.get("client_id") != client.id:
        raise errors.InvalidRequest("The token was not issued to this client.")
    jti = str(claims.get("jti"))
    refresh = await uow.refresh_tokens.get(jti)
    if refresh is not None:
        await revoke_grant(
            grants,
            refresh.family_id,
            client_id=client.id,
            user_id=refresh.user_id,
            reason="client_request",
            within=uow,
        )
    else:
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            return  # §2.2: not one of our access tokens (ours always carry exp)
        until = grants.tokens.access_token_end(exp)
        await uow.revocations.revoke_access_token(jti, until, utcnow())
        await uow.commit()
        await grants.tokens.deny_access_token(jti, until)
        # Audited like every revocation: whose token it was (a machine client's own has no user).
        subject = claims.get("sub")
        user_id = grants.subjects.user_id_for(client, subject) if isinstance(subject, str) else None
        await grants.events.publish(
            TokenRevoked(
                client=client.id,
                reason="client_request",
                user_id=None if subject == client.id else user_id,
                token_type="access_token",  # noqa: S106 - a token type (RFC 7009), not a secret
            )
        )
