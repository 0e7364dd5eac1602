"""The UserInfo endpoint (OIDC Core §5.3): the claims of the user an access token speaks for.

GET or POST (§5.3.1); the token in the Authorization header or a form body (RFC 6750 §2.1, §2.2).
Only a token issued for OpenID Connect (scope ``openid``) may read it, and only the claims of the
scopes it carries (§5.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from idp.oauth.claims import user_claims
from idp.oauth.resource import BearerProtector
from idp.oauth.scopes import OPENID

NOT_OPENID = "The access token was not issued for OpenID Connect (scope openid)."


async def userinfo_claims(
    protector: BearerProtector,
    authorization: Sequence[str],
    form: Mapping[str, Any] | None,
    picture_base_url: str,
) -> dict[str, Any]:
    """The UserInfo response for the request's bearer token (errors are RFC 6750's)."""
    grant = await protector.authenticate(authorization, form, scopes=(OPENID,), scope_description=NOT_OPENID)
    return user_claims(grant.user, grant.scopes, grant.subject, picture_base_url)
