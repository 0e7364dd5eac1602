"""The one error model.

Every deliberate error is an ``IdPError``: its class carries the error code (the RFC 6749 code for
protocol errors), the HTTP status and any headers. ``render_error`` turns it into an HTML page for
browser routes or ``{"error", "error_description"}`` JSON for APIs and protocol endpoints.
Anything else becomes ``server_error`` with a fixed description: no stack trace, SQL or message of
an unexpected exception ever reaches a client (or a log line, see observability).
"""

from __future__ import annotations

from typing import ClassVar


class IdPError(Exception):
    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400
    default_description: ClassVar[str] = "The request is invalid."

    def __init__(self, description: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.description = description or self.default_description
        self.headers = dict(headers or {})
        super().__init__(self.description)

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(IdPError):
    error = "invalid_request"


class NotFound(IdPError):
    error = "not_found"
    status_code = 404
    default_description = "The requested resource does not exist."


class MethodNotAllowed(IdPError):
    error = "method_not_allowed"
    status_code = 405
    default_description = "This method is not allowed here."


class Unauthorized(IdPError):
    error = "unauthorized"
    status_code = 401
    default_description = "Authentication is required."


class Forbidden(IdPError):
    error = "forbidden"
    status_code = 403
    default_description = "You are not allowed to do this."


class Conflict(IdPError):
    error = "conflict"
    status_code = 409
    default_description = "The request conflicts with the current state."


class PayloadTooLarge(IdPError):
    error = "payload_too_large"
    status_code = 413
    default_description = "The request body is too large."


class UriTooLong(IdPError):
    error = "uri_too_long"
    status_code = 414
    default_description = "The request target is too long."


class RequestHeaderFieldsTooLarge(IdPError):
    error = "request_header_fields_too_large"
    status_code = 431
    default_description = "The request header fields are too large."


class UnsupportedMediaType(IdPError):
    error = "unsupported_media_type"
    status_code = 415
    default_description = "The request body has an unsupported content type."


class TooManyRequests(IdPError):
    error = "rate_limited"
    status_code = 429
    default_description = "Too many requests; try again later."

    def __init__(self, retry_after: int, description: str | None = None) -> None:
        super().__init__(description, headers={"Retry-After": str(max(1, int(retry_after)))})
        self.retry_after = retry_after


def bearer_challenge(**params: str) -> str:
    """A `WWW-Authenticate: Bearer` challenge (RFC 6750 §3). Values are quoted-strings: characters
    outside printable ASCII, quotes and backslashes are dropped rather than escaped."""

    def quoted(value: str) -> str:
        return "".join(ch for ch in value if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')

    return "Bearer " + ", ".join(f'{name}="{quoted(value)}"' for name, value in {"realm": "idp", **params}.items())


class BearerTokenMissing(IdPError):
    """RFC 6750 §3.1: a request with no token at all gets a bare challenge, no error code in it."""

    error = "invalid_request"
    status_code = 401
    default_description = "An access token is required (Authorization: Bearer)."

    def __init__(self, description: str | None = None) -> None:
        super().__init__(description, headers={"WWW-Authenticate": bearer_challenge()})


class InvalidToken(IdPError):
    """RFC 6750 §3.1: the Bearer token is missing its mark: malformed, expired, revoked, foreign."""

    error = "invalid_token"
    status_code = 401
    default_description = "The access token is invalid, expired or revoked."

    def __init__(self, description: str | None = None) -> None:
        desc = description or self.default_description
        super().__init__(desc, headers={"WWW-Authenticate": bearer_challenge(error=self.error, error_description=desc)})


class InsufficientScope(IdPError):
    """RFC 6750 §3.1: the token lacks a scope the request needs; the challenge names the scope."""

    error = "insufficient_scope"
    status_code = 403
    default_description = "The access token does not carry the scopes this request needs."

    def __init__(self, description: str | None = None, *, scope: str | None = None) -> None:
        params = {"error": self.error, **({"scope": scope} if scope else {})}
        super().__init__(description, headers={"WWW-Authenticate": bearer_challenge(**params)})


class InsufficientUserAuthentication(IdPError):
    """RFC 9470 §3: the sign-in behind the token is too old (or too weak); ask again with max_age."""

    error = "insufficient_user_authentication"
    status_code = 401
    default_description = "A more recent sign-in is required."

    def __init__(self, max_age: int | None, description: str | None = None, *, acr_values: str | None = None) -> None:
        desc = description or self.default_description
        # RFC 9470 §3: max_age when the sign-in is too old, acr_values when it is too weak.
        params = {"max_age": str(max_age)} if max_age is not None else {}
        if acr_values:
            params["acr_values"] = acr_values
        super().__init__(
            desc,
            headers={"WWW-Authenticate": bearer_challenge(error=self.error, error_description=desc, **params)},
        )


class ServerError(IdPError):
    error = "server_error"
    status_code = 500
    default_description = "The server encountered an unexpected condition."


class ServiceUnavailable(IdPError):
    error = "temporarily_unavailable"
    status_code = 503
    default_description = "The service is temporarily unavailable."
    # RFC 9110 §10.2.3: when to try again (a dependency outage is usually seconds long).
    RETRY_AFTER = 5

    def __init__(self, description: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description, headers={"Retry-After": str(self.RETRY_AFTER), **(headers or {})})


_STATUS_TO_ERROR: dict[int, type[IdPError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    414: UriTooLong,
    415: UnsupportedMediaType,
    431: RequestHeaderFieldsTooLarge,
    503: ServiceUnavailable,
}


def from_http_status(status: int, description: str | None = None) -> IdPError:
    """Map a framework HTTP exception (404 from routing, 405, 413 …) onto the error model."""
    error_type = _STATUS_TO_ERROR.get(status, ServerError if status >= 500 else InvalidRequest)
    return error_type(description)
