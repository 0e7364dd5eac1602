"""The standard scopes (OIDC Core §5.4, §11): the one list discovery advertises, new clients get,
the consent page describes and client_credentials leaves out.

Other scopes are the client's own (registered per client, RFC 6749 §3.3); they name no user data,
so they are the only ones a client may ask for without a user (RFC 6749 §4.4).
"""

from __future__ import annotations

OPENID = "openid"
OFFLINE_ACCESS = "offline_access"
STANDARD_SCOPES = (OPENID, "profile", "email", OFFLINE_ACCESS)
# Scopes about a user: meaningless (and refused) in a grant without one.
USER_SCOPES = frozenset(STANDARD_SCOPES)

# The administration scope: a client may ask for it only if registered for it, and a person's
# token carries it only if the person is an administrator when the code is issued (the admin API
# checks the role again at each request).
ADMIN = "admin"


def scopes_for_user(scopes: list[str], *, is_admin: bool) -> list[str]:
    """The requested scopes the user may be granted: ``admin`` only for an administrator (the
    token then says which scopes it has, RFC 6749 §5.1)."""
    return [scope for scope in scopes if scope != ADMIN or is_admin]


# What the consent page tells the user each standard scope lets the application do.
SCOPE_DESCRIPTIONS = {
    OPENID: "Sign you in with your account identifier",
    "profile": "Your name, username, picture, locale and time zone",
    "email": "Your email address and whether it is verified",
    OFFLINE_ACCESS: "Stay connected when you are not using the app (refresh tokens)",
}


def describe_scope(scope: str) -> str:
    """The consent page's words for ``scope``; a client's own scope is shown by its name."""
    return SCOPE_DESCRIPTIONS.get(scope, scope)
