"""OAuth 2.0 / OpenID Connect error codes as IdPError subclasses.

``error`` is the registered code (RFC 6749 §4.1.2.1, §5.2; RFC 6750 §3.1; RFC 7009 §2.2.1;
OIDC Core §3.1.2.6). ``RedirectableError`` marks errors that may be sent back to a *verified*
redirect URI; all others are rendered by the IdP itself (RFC 6749 §4.1.2.1: never redirect to an
unverified redirect URI).
"""

from __future__ import annotations

from idp.errors import BearerTokenMissing, IdPError, InsufficientScope, InvalidToken

# RFC 6750 errors are shared with the account API, so they live in idp.errors.
__all__ = ["BearerTokenMissing", "InsufficientScope", "InvalidToken"]


class OAuthError(IdPError):
    pass


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 §5.2): 401 with a WWW-Authenticate challenge."""

    error = "invalid_client"
    status_code = 401
    default_description = "Client authentication failed."

    def __init__(self, description: str | None = None, *, scheme: str = "Basic") -> None:
        super().__init__(description, headers={"WWW-Authenticate": f'{scheme} realm="idp"'})


class InvalidGrant(OAuthError):
    error = "invalid_grant"
    default_description = "The grant is invalid, expired, revoked or was issued to another client."


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"
    default_description = "The client is not allowed to use this grant type."


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    default_description = "The grant type is not supported."


class InvalidScope(OAuthError):
    error = "invalid_scope"
    default_description = "The requested scope is invalid or exceeds what the client may request."


class UnsupportedTokenType(OAuthError):
    error = "unsupported_token_type"
    default_description = "The token type is not supported."


class RedirectableError(OAuthError):
    """An authorization-endpoint error that goes back to the client's verified redirect URI."""


class AccessDenied(RedirectableError):
    error = "access_denied"
    status_code = 403
    default_description = "The resource owner or the IdP denied the request."


class UnsupportedResponseType(RedirectableError):
    error = "unsupported_response_type"
    default_description = "Only response_type=code is supported."


class InvalidAuthorizationRequest(RedirectableError):
    error = "invalid_request"


class InvalidAuthorizationScope(RedirectableError):
    error = "invalid_scope"
    default_description = "The requested scope is invalid or exceeds what the client may request."


class LoginRequired(RedirectableError):
    error = "login_required"
    default_description = "The user must sign in."


class ConsentRequired(RedirectableError):
    error = "consent_required"
    default_description = "The user must consent."


class InteractionRequired(RedirectableError):
    error = "interaction_required"
    default_description = "The user must interact with the IdP."


class UnauthorizedClientRedirect(RedirectableError):
    error = "unauthorized_client"
    default_description = "This client may not use the authorization code grant."


class RequestNotSupported(RedirectableError):
    """OIDC Core §3.1.2.6: request objects are not supported."""

    error = "request_not_supported"
    default_description = "Request objects are not supported."


class RequestUriNotSupported(RedirectableError):
    error = "request_uri_not_supported"
    default_description = "request_uri is not supported."
