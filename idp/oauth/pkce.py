"""Proof Key for Code Exchange (RFC 7636), both halves: the challenge at the authorization
endpoint and the verifier at the token endpoint.

Only S256: "plain" would send the verifier itself through the front channel (RFC 9700 §2.1.1).
Every client is asked for PKCE unless it is a confidential client registered without it
(ASVS 10.4.6). The hash is Authlib's; the comparison takes constant time.
"""

from __future__ import annotations

import hmac
import re

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from idp.oauth import errors

__all__ = ("METHODS", "check_challenge", "check_verifier")

METHODS = ("S256",)
# RFC 7636 §4.1 and §4.2: 43-128 characters of the unreserved set, for the verifier and (being
# its base64url hash, or at most as long) the challenge. Used with fullmatch: "$" would also match
# before a trailing newline (Authlib's own patterns do).
_PKCE_VALUE = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def check_challenge(challenge: str | None, method: str | None, *, required: bool) -> str | None:
    """The method of a valid challenge ("S256"), or None when the request has none and needs none.

    Raises InvalidRequest (the authorization endpoint redirects it, RFC 7636 §4.4.1)."""
    if challenge is None:
        if method is not None:
            raise errors.InvalidRequest("code_challenge_method without code_challenge")
        if required:
            # RFC 9700 §2.1.1, ASVS 10.4.6: PKCE for every client by default.
            raise errors.InvalidRequest("code_challenge is required (PKCE with S256)")
        return None
    # RFC 7636 §4.3: a missing method means "plain".
    if (method or "plain") not in METHODS:
        raise errors.InvalidRequest("code_challenge_method must be S256 (plain is not allowed)")
    if not _PKCE_VALUE.fullmatch(challenge):
        raise errors.InvalidRequest("code_challenge must be 43-128 characters of [A-Za-z0-9-._~]")
    return "S256"


def check_verifier(verifier: str | None, challenge: str | None) -> None:
    """The token request's code_verifier against the code's challenge (RFC 7636 §4.6).

    Raises InvalidGrant (RFC 7636 §4.6: the grant is refused, not the request)."""
    if challenge is None:
        if verifier is not None:
            # RFC 9700 §4.8.2: a verifier without a challenge is a PKCE downgrade attempt.
            raise errors.InvalidGrant("code_verifier given, but the authorization request had no code_challenge.")
        return
    if verifier is None:
        raise errors.InvalidGrant("code_verifier is required (PKCE).")
    if not _PKCE_VALUE.fullmatch(verifier):
        raise errors.InvalidGrant("code_verifier must be 43-128 characters of [A-Za-z0-9-._~].")
    if not hmac.compare_digest(create_s256_code_challenge(verifier), challenge):
        raise errors.InvalidGrant("code_verifier does not match the code_challenge.")
