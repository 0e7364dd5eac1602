"""Standard claims released per scope (OIDC Core §5.4), for UserInfo."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import quote, urlsplit

from idp.storage.models import User

PROFILE_CLAIMS = ("name", "given_name", "family_name", "preferred_username", "locale", "zoneinfo", "picture")
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "profile": (*PROFILE_CLAIMS, "updated_at"),
    "email": ("email", "email_verified"),
}
SUPPORTED_CLAIMS = ("sub", "iss", "auth_time", "acr", "amr", "sid", *SCOPE_CLAIMS["profile"], *SCOPE_CLAIMS["email"])


def user_claims(user: User, scopes: Collection[str], subject: str, picture_base_url: str) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": subject}
    if "profile" in scopes:
        for name in PROFILE_CLAIMS:
            value = getattr(user, name)
            if name == "picture" and value:
                value = picture_url(value, picture_base_url)
            if value:
                claims[name] = value
        claims["updated_at"] = int(user.updated_at.timestamp())
    if "email" in scopes:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    return claims


def picture_url(value: str, base_url: str) -> str:
    """The `picture` claim is a URL (OIDC Core §5.1): an absolute http(s) URL is released as
    stored; anything else is the name of a picture this IdP serves under ``base_url``."""
    try:
        absolute = urlsplit(value).scheme.lower() in ("http", "https")
    except ValueError:  # e.g. a malformed IPv6 host: not a usable URL
        absolute = False
    if absolute:
        return value
    return f"{base_url}/{quote(value, safe='')}"
