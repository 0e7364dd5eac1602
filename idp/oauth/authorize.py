"""The authorization endpoint's request validation and code issuance (RFC 6749 §4.1, OIDC Core §3.1.2).

Validation runs in two phases. Until the client and its redirect URI are verified, every error is
fatal: the IdP renders it itself and never redirects (RFC 6749 §4.1.2.1, RFC 9700 §4.11.2). After
that, errors are returned to the verified redirect URI with ``state`` and ``iss`` (RFC 9207) — but
only once the user is authenticated, or at once with prompt=none (RFC 9700 §4.11.2; the routes
park the error until sign-in).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from idp.oauth import errors, pkce
from idp.oauth.params import all_values, single_value
from idp.oauth.scopes import OPENID
from idp.security.tokens import random_token, sha256_digest
from idp.storage.db import Database
from idp.storage.models import AuthorizationCode, OAuthClient, utcnow
from idp.storage.repositories import AuthorizationCodeRepository, ClientRepository

RESPONSE_MODES = ("query", "form_post")
PROMPTS = ("none", "login", "consent", "select_account", "create")
# Numeric parameters are ASCII digits only: str.isdigit() and int() also take superscript,
# Arabic-Indic and fullwidth digits (and int() "+1", " 1", "1_0"). Ten digits bound the value.
_ASCII_NUMBER = re.compile(r"[0-9]{1,10}")
MAX_STATE = 2048
MAX_NONCE = 512
MAX_HINT = 4096


class FatalAuthorizationError(errors.OAuthError):
    """Shown by the IdP as an error page: the redirect URI can't be trusted (or isn't known yet)."""


class UnknownClient(FatalAuthorizationError):
    error = "invalid_client"
    default_description = "The client is unknown or disabled."


class InvalidRedirectUri(FatalAuthorizationError):
    error = "invalid_request"
    default_description = "The redirect_uri is missing or not registered for this client."


@dataclass(frozen=True)
class RedirectTarget:
    """Where and how an authorization response (or redirectable error) goes."""

    redirect_uri: str
    state: str | None
    response_mode: str


def with_query(uri: str, params: Mapping[str, str]) -> str:
    """``uri`` with ``params`` added to its query; a query the URI was registered with is kept
    (RFC 6749 §3.1.2)."""
    if not params:
        return uri
    separator = "&" if urlsplit(uri).query else "?"
    return f"{uri}{separator}{urlencode(params)}"


def response_parameters(target: RedirectTarget, params: Mapping[str, str], issuer: str) -> dict[str, str]:
    """What goes back to the redirect URI: ``params`` (a code, or an error), the request's
    ``state`` (RFC 6749 §4.1.2) and the issuer (RFC 9207 ``iss``, against mix-up attacks)."""
    payload = dict(params)
    if target.state is not None:
        payload["state"] = target.state
    payload["iss"] = issuer
    return payload


class AuthorizationErrorRedirect(Exception):
    def __init__(self, error: errors.RedirectableError, target: RedirectTarget) -> None:
        super().__init__(error.description)
        self.error = error
        self.target = target


@dataclass
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    response_mode: str
    scopes: list[str]
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    prompt: list[str] = field(default_factory=list)
    max_age: int | None = None
    login_hint: str | None = None
    id_token_hint: str | None = None
    acr_values: list[str] = field(default_factory=list)
    ui_locales: str | None = None
    # RFC 6749 §4.1.3: if the request carried redirect_uri, the token request must repeat it.
    # (Requests parked before this field existed read as True, the stricter answer.)
    redirect_uri_in_request: bool = True

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)

    @property
    def is_openid(self) -> bool:
        return OPENID in self.scopes

    @property
    def target(self) -> RedirectTarget:
        return RedirectTarget(self.redirect_uri, self.state, self.response_mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuthorizationRequest:
        return cls(**data)


def redirect_uri_matches(client: OAuthClient, candidate: str) -> bool:
    """Exact string match (RFC 9700 §2.1), except the port of loopback IP redirect URIs of native
    clients, which the OS picks at run time (RFC 8252 §7.3). Nothing is normalised or stripped
    first: userinfo, a fragment or a malformed port make the URI a different one."""
    if "#" in candidate:
        return False  # RFC 6749 §3.1.2: the redirection endpoint URI MUST NOT include a fragment
    if candidate in client.redirect_uris:
        return True
    if client.application_type != "native":
        return False
    requested = _portless_loopback_uri(candidate)
    return requested is not None and any(
        _portless_loopback_uri(registered) == requested for registered in client.redirect_uris
    )


# http://<IP literal>[:<port>]<path and query>, taken apart by hand: urlsplit accepts userinfo and
# any port text (it checks the port only when .port is read). Only an IP literal: RFC 8252 §8.3
# does not recommend "localhost", so it gets no port freedom.
_LOOPBACK_URI = re.compile(r"http://(?P<host>[0-9.]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>[^/?#]*))?(?P<rest>[/?][^#]*)?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")  # ASCII digits, no sign, no leading zero


def _portless_loopback_uri(uri: str) -> tuple[str, str] | None:
    """(host, path and query) of an http URI on a loopback IP literal with a valid port or none,
    else None."""
    match = _LOOPBACK_URI.fullmatch(uri)
    if match is None:
        return None
    host, port = match.group("host"), match.group("port")
    try:
        if not ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        return None
    if port is not None and (not _PORT.fullmatch(port) or int(port) > 65535):
        return None
    return host, match.group("rest") or ""


def requested_client_id(params: Mapping[str, Any]) -> str | None:
    """The client_id of an authorization request; a repeated one is fatal (RFC 6749 §3.1): which
    client, and so which redirect URIs, would be trusted is then ambiguous."""
    try:
        return single_value(params, "client_id")
    except errors.InvalidRequest as exc:
        raise FatalAuthorizationError(exc.description) from None


async def find_client(db: Database, client_id: str | None) -> OAuthClient:
    if not client_id or len(client_id) > 128:
        raise UnknownClient("The client_id parameter is missing or invalid.")
    async with db.session() as session:
        client = await ClientRepository(session).get(client_id)
    if client is None or client.disabled:
        raise UnknownClient()
    return client


def verify_client_and_redirect(client: OAuthClient, params: Mapping[str, Any]) -> RedirectTarget:
    """Phase one: everything that must hold before the IdP may redirect anywhere."""
    try:
        redirect_uri = single_value(params, "redirect_uri")
        state = single_value(params, "state")
        response_mode = single_value(params, "response_mode") or "query"
    except errors.InvalidRequest as exc:
        raise InvalidRedirectUri(exc.description) from None
    if redirect_uri is None:
        # OIDC Core §3.1.2.1 requires it; plain OAuth (RFC 6749 §3.1.2.3) may omit it only with a
        # single registration.
        if _asks_for_openid(params):
            raise InvalidRedirectUri("The redirect_uri parameter is required in an OpenID Connect request.")
        if len(client.redirect_uris) != 1:
            raise InvalidRedirectUri("The redirect_uri parameter is required.")
        redirect_uri = client.redirect_uris[0]
    if len(redirect_uri) > 2048 or not redirect_uri_matches(client, redirect_uri):
        raise InvalidRedirectUri("The redirect_uri is not registered for this client.")
    if response_mode not in RESPONSE_MODES:
        response_mode = "query"  # the error about it still needs a way back
    return RedirectTarget(redirect_uri, state[:MAX_STATE] if state else None, response_mode)


def _asks_for_openid(params: Mapping[str, Any]) -> bool:
    # Phase one can't rely on the scope parsing of phase two: a repeated scope is an error there,
    # so any of its values asking for openid counts.
    return any(OPENID in value.split() for value in all_values(params, "scope"))


def asks_prompt_none(params: Mapping[str, Any]) -> bool:
    """Whether the raw request says prompt=none (OIDC Core §3.1.2.1), read without validating it:
    the answer matters most when validation (perhaps of prompt itself) failed."""
    return any("none" in value.split() for value in all_values(params, "prompt"))


def parse_authorization_request(client: OAuthClient, params: Mapping[str, Any]) -> AuthorizationRequest:
    """Phase two: validate the rest. Errors are redirectable (AuthorizationErrorRedirect)."""
    target = verify_client_and_redirect(client, params)
    try:
        return _parse(client, params, target)
    except errors.InvalidRequest as exc:
        raise AuthorizationErrorRedirect(errors.InvalidAuthorizationRequest(exc.description), target) from None
    except errors.RedirectableError as exc:
        raise AuthorizationErrorRedirect(exc, target) from None


def _parse(client: OAuthClient, params: Mapping[str, Any], target: RedirectTarget) -> AuthorizationRequest:
    """The request's parameters once the redirect URI is trusted, as named checks in the order
    their errors are reported; each raises the redirectable error of what it checks."""
    _check_state(params)
    response_mode = _response_mode(params)
    _check_no_request_object(params)
    _check_response_type(client, params)
    scopes = _scopes(client, params)
    challenge = single_value(params, "code_challenge")
    method = pkce.check_challenge(
        challenge,
        single_value(params, "code_challenge_method"),
        required=client.require_pkce or client.client_type == "public",
    )
    prompt = _prompt(params)
    max_age = _max_age(params)
    nonce, login_hint, id_token_hint = _nonce_and_hints(params)
    acr_values = (single_value(params, "acr_values") or "").split()
    ui_locales = single_value(params, "ui_locales")
    return AuthorizationRequest(
        client_id=client.id,
        redirect_uri=target.redirect_uri,
        response_mode=response_mode,
        scopes=scopes,
        state=target.state,
        nonce=nonce,
        code_challenge=challenge,
        code_challenge_method=method,
        prompt=prompt,
        max_age=max_age,
        login_hint=login_hint[:320] if login_hint else None,
        id_token_hint=id_token_hint,
        acr_values=acr_values[:10],
        ui_locales=ui_locales[:200] if ui_locales else None,
        redirect_uri_in_request=single_value(params, "redirect_uri") is not None,
    )


def _check_state(params: Mapping[str, Any]) -> None:
    if len(single_value(params, "state") or "") > MAX_STATE:
        raise errors.InvalidRequest(f"state is longer than {MAX_STATE} characters")


def _response_mode(params: Mapping[str, Any]) -> str:
    response_mode = single_value(params, "response_mode") or "query"
    if response_mode not in RESPONSE_MODES:
        raise errors.InvalidRequest("response_mode must be query or form_post")
    return response_mode


def _check_no_request_object(params: Mapping[str, Any]) -> None:
    # OIDC Core §6: request objects are not supported (advertised in discovery).
    if single_value(params, "request") is not None:
        raise errors.RequestNotSupported()
    if single_value(params, "request_uri") is not None:
        raise errors.RequestUriNotSupported()


def _check_response_type(client: OAuthClient, params: Mapping[str, Any]) -> None:
    response_type = single_value(params, "response_type")
    if response_type is None:
        raise errors.InvalidRequest("response_type is required")
    if response_type != "code":
        # RFC 9700 §2.1.2: no implicit or hybrid flows.
        raise errors.UnsupportedResponseType()
    if "authorization_code" not in client.grant_types:
        raise errors.UnauthorizedClientRedirect()


def _scopes(client: OAuthClient, params: Mapping[str, Any]) -> list[str]:
    scopes = list(dict.fromkeys((single_value(params, "scope") or "").split()))
    if not scopes:
        raise errors.InvalidAuthorizationScope("scope is required")
    not_allowed = [scope for scope in scopes if scope not in client.scopes]
    if not_allowed:
        raise errors.InvalidAuthorizationScope(f"scope not allowed for this client: {' '.join(not_allowed)}")
    return scopes


def _prompt(params: Mapping[str, Any]) -> list[str]:
    prompt = (single_value(params, "prompt") or "").split()
    for value in prompt:
        if value not in PROMPTS:
            raise errors.InvalidRequest(f"unsupported prompt value {value!r}")
    if "none" in prompt and len(prompt) > 1:
        raise errors.InvalidRequest("prompt=none cannot be combined with other values")
    return prompt


def _max_age(params: Mapping[str, Any]) -> int | None:
    max_age = single_value(params, "max_age")
    if max_age is None:
        return None
    # OIDC Core §3.1.2.1: max_age is a number of seconds.
    if not _ASCII_NUMBER.fullmatch(max_age):
        raise errors.InvalidRequest("max_age must be a non-negative integer of at most 10 ASCII digits")
    return int(max_age)


def _nonce_and_hints(params: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    nonce = single_value(params, "nonce")
    if nonce is not None and len(nonce) > MAX_NONCE:
        raise errors.InvalidRequest(f"nonce is longer than {MAX_NONCE} characters")
    login_hint = single_value(params, "login_hint")
    id_token_hint = single_value(params, "id_token_hint")
    for hint_name, hint_value in (("login_hint", login_hint), ("id_token_hint", id_token_hint)):
        if hint_value is not None and len(hint_value) > MAX_HINT:
            raise errors.InvalidRequest(f"{hint_name} is too long")
    return nonce, login_hint, id_token_hint


@dataclass(frozen=True)
class IssuedCode:
    code: str
    grant_id: str


async def issue_authorization_code(
    db: Database,
    request: AuthorizationRequest,
    *,
    user_id: str,
    session_id: str | None,
    auth_time: int,
    amr: list[str],
    acr: str | None,
    ttl: int,
) -> IssuedCode:
    """A single-use code bound to client, redirect URI, PKCE challenge and user (RFC 6749 §4.1.2)."""
    code = random_token(32)
    grant_id = random_token(16)
    now = utcnow()
    async with db.session() as session:
        await AuthorizationCodeRepository(session).add(
            AuthorizationCode(
                code_digest=sha256_digest(code),
                grant_id=grant_id,
                client_id=request.client_id,
                user_id=user_id,
                redirect_uri=request.redirect_uri,
                redirect_uri_in_request=request.redirect_uri_in_request,
                scope=request.scope,
                nonce=request.nonce,
                code_challenge=request.code_challenge,
                code_challenge_method=request.code_challenge_method,
                session_id=session_id,
                auth_time=datetime.fromtimestamp(auth_time, UTC),
                acr=acr,
                amr=list(amr),
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
        )
    return IssuedCode(code=code, grant_id=grant_id)
