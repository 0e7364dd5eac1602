"""CSRF protection for the IdP's HTML forms (ASVS 3.5.1).

A random value in an HttpOnly, SameSite=Lax cookie binds the browser; forms carry an HMAC of it
under the cookie secret. A cross-site attacker can neither read the cookie nor compute the HMAC.
"""

from __future__ import annotations

import hashlib
import hmac

from idp.security.tokens import random_token

COOKIE_NAME = "idp_csrf"


def new_binding() -> str:
    return random_token(32)


def form_token(secret: str, binding: str) -> str:
    return hmac.new(secret.encode(), f"csrf|{binding}".encode(), hashlib.sha256).hexdigest()


def verify(secret: str, binding: str | None, token: str | None) -> bool:
    if not binding or not token or len(token) != 64:
        return False
    return hmac.compare_digest(form_token(secret, binding), token)
