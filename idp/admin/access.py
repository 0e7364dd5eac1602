"""Who may administer: the bearer of an access token with the ``admin`` scope that is either

- a machine client's own token (client_credentials: its ``sub`` is the client) whose registration
  allows the ``admin`` scope, or
- a person's token from a first-party client, when that person is an enabled administrator now
  (the role is checked at every request, not when the token was issued) and, under
  ``[admin] require_mfa``, signed in with a second factor.

Destructive actions also need a recent sign-in from people (``require_fresh``, RFC 9470).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from idp.accounts.signin.authn import ACR_MFA
from idp.errors import Forbidden, InsufficientUserAuthentication, InvalidToken
from idp.oauth.resource import GONE, BearerProtector, TokenParties, bearer_token
from idp.storage.models import OAuthClient, User

ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class Administrator:
    client: OAuthClient
    user: User | None  # None for a machine client
    claims: dict[str, Any]

    @property
    def actor_id(self) -> str:
        """Who the audit log names: the person, or the machine client."""
        return self.user.id if self.user is not None else f"client:{self.client.id}"


def _is_machine_token(claims: dict[str, Any]) -> bool:
    # client_credentials tokens are about the client itself and carry no sign-in (no auth_time).
    return claims.get("sub") == claims.get("client_id") and "auth_time" not in claims


async def authenticate_admin(
    protector: BearerProtector, parties: TokenParties, authorization: Sequence[str], *, require_mfa: bool
) -> Administrator:
    """The administrator behind the request's Bearer token (RFC 6750 §2.1: the header only), or
    401 invalid_token / 403 insufficient_scope or forbidden / 401 insufficient_user_authentication."""
    claims = await protector.verify(bearer_token(authorization))
    protector.require_scopes(claims, [ADMIN_SCOPE], "The admin API needs a token with the admin scope.")
    if _is_machine_token(claims):
        client = await parties.client(str(claims.get("client_id")))
        if client is None or client.disabled:
            raise InvalidToken(GONE)
        if ADMIN_SCOPE not in client.scopes:
            raise Forbidden("This client is no longer allowed the admin scope.")
        return Administrator(client, None, claims)
    client, user = await protector.caller(claims)
    if not client.first_party:
        raise Forbidden("The admin API takes people's tokens from first-party applications only.")
    if not user.is_admin:
        raise Forbidden("This account is not an administrator.")
    if require_mfa and "mfa" not in (claims.get("amr") or []):
        raise InsufficientUserAuthentication(
            None, "Administrators must sign in with a second factor.", acr_values=ACR_MFA
        )
    return Administrator(client, user, claims)


def require_fresh(admin: Administrator, max_age: int) -> None:
    """A person's sign-in must be at most ``max_age`` seconds old for a destructive action
    (RFC 9470 §3: the client asks again with max_age). Machine clients have no sign-in to renew."""
    if admin.user is None:
        return
    auth_time = admin.claims.get("auth_time")
    if not isinstance(auth_time, int) or time.time() - auth_time > max_age:
        raise InsufficientUserAuthentication(max_age, "This action needs a recent sign-in.")
