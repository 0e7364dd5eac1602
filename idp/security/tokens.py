"""Random tokens and their digests.

Everything handed out as a bearer credential (authorization codes, client secrets, session ids,
one-time links) is random from the OS CSPRNG with at least 256 bits, and only a digest is stored.
High-entropy secrets need a fast keyed digest, not a password hash (argon2 would cap the token
endpoint near 45 requests/s per core).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


class TokenInvalid(Exception):
    """A token this server signed (or claims to) is not acceptable; the message says why (safe to
    log, not to show). Defined here so every layer can catch it without importing the protocol."""


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random string carrying ``nbytes`` bytes of entropy (default 256 bits)."""
    return secrets.token_urlsafe(nbytes)


def sha256_digest(value: str) -> str:
    """Hex SHA-256, for looking up high-entropy tokens by their stored digest."""
    return hashlib.sha256(value.encode()).hexdigest()


def secret_digest(secret: str) -> str:
    """Stored form of an IdP-generated secret: SHA-256, prefixed with the scheme for later change.

    The secrets are 256-bit random values, so a plain digest is preimage-safe; no pepper means a
    cookie-secret or KEK rotation can't silently invalidate every client secret.
    """
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(secret: str, stored: str | None) -> bool:
    """Constant-time comparison of a presented secret with its stored digest."""
    presented = secret_digest(secret)
    if not stored:
        hmac.compare_digest(presented, presented)  # same work as a wrong secret
        return False
    return hmac.compare_digest(presented, stored)
