"""Protocol endpoints: the only protocol module that imports Quart.

Two blueprints by audience: ``oauth`` answers JSON (discovery, JWKS, token, userinfo,
introspection, revocation); ``oauth_pages`` serves browsers (authorization, consent, logout) and
renders its errors as HTML.
"""

from __future__ import annotations

import time
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from quart import Blueprint, Response, g, jsonify, render_template, request

from idp import cors
from idp.accounts.apps import consents
from idp.accounts.security import mfa
from idp.accounts.sessions.store import BrowserSession
from idp.accounts.signin import authn
from idp.errors import InvalidRequest, UnsupportedMediaType
from idp.events import ConsentGranted, LoggedOut
from idp.http import runtime
from idp.oauth import errors
from idp.oauth.authorize import (
    AuthorizationErrorRedirect,
    AuthorizationRequest,
    RedirectTarget,
    asks_prompt_none,
    find_client,
    issue_authorization_code,
    parse_authorization_request,
    requested_client_id,
)
from idp.oauth.claims import SUPPORTED_CLAIMS, user_claims
from idp.oauth.client_auth import ASSERTION_ALGS, authenticate_client, parse_client_credentials
from idp.oauth.clients import AUTH_METHODS, GRANT_TYPES
from idp.oauth.discovery import provider_metadata
from idp.oauth.grants import find_refresh_token, handle_token_request, revoke_grant
from idp.oauth.interactions import COOKIE_NAME as INTERACTION_COOKIE
from idp.oauth.interactions import Interaction, ParkedError
from idp.oauth.params import reject_repeated, single_value
from idp.oauth.tokens import ID_TOKEN_TYP, REFRESH_TOKEN_TYP, TokenInvalid
from idp.security.headers import content_security_policy
from idp.security.tokens import random_token
from idp.storage.models import OAuthClient, User
from idp.storage.repositories import ClientRepository, UserRepository
from idp.web import (
    SESSION_COOKIE,
    clear_cookie,
    client_ip,
    csrf_token,
    current_session,
    enforce_limits,
    let_forms_leave_site,
    read_cookie,
    require_csrf,
    see_other,
    set_cookie,
)

blueprint = Blueprint("oauth", __name__)
pages = Blueprint("oauth_pages", __name__)

# RPs re-fetch the JWKS on an unknown kid; keep caches shorter than a rotation's overlap.
JWKS_MAX_AGE = 300
METADATA_MAX_AGE = 3600
SCOPES = ("openid", "profile", "email", "offline_access")
SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in with your account identifier",
    "profile": "Your name, username, picture, locale and time zone",
    "email": "Your email address and whether it is verified",
    "offline_access": "Stay connected when you are not using the app (refresh tokens)",
}


# Endpoints a browser app calls directly; only they answer cross-origin (RFC 9700 §2.6).
CORS_ENDPOINTS = frozenset({"oauth.token", "oauth.userinfo", "oauth.revoke", "oauth.introspect"})


@blueprint.after_request
async def _cross_origin(response: Response) -> Response:
    """CORS for registered web origins only; never with credentials (no cookies here)."""
    if request.endpoint not in CORS_ENDPOINTS:
        return response
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if not await runtime().cors.allowed(origin):
        return response
    assert origin is not None
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = cors.EXPOSED_HEADERS
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = (
            "GET, POST" if request.endpoint == "oauth.userinfo" else "POST"
        )
        response.headers["Access-Control-Allow-Headers"] = cors.ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = str(cors.PREFLIGHT_MAX_AGE)
    return response


def _no_store(response: Response) -> Response:
    # RFC 6749 §5.1: token responses must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


# --------------------------------------------------------------------------------------------------
# Discovery and keys


def _metadata() -> dict[str, Any]:
    rt = runtime()
    return provider_metadata(
        rt.settings.issuer,
        rt.keys.algorithms,
        scopes=list(SCOPES),
        grant_types=list(GRANT_TYPES),
        auth_methods=list(AUTH_METHODS),
        assertion_algs=[alg for alg in ASSERTION_ALGS if alg != "EdDSA"],
        claims=list(SUPPORTED_CLAIMS),
        acr_values=list(authn.ACR_VALUES),
        pairwise=rt.subjects.pairwise_available,
        registration=rt.settings.accounts.registration_enabled,
    )


@blueprint.get("/.well-known/openid-configuration")
async def openid_configuration() -> Response:
    response = jsonify(_metadata())
    response.headers["Cache-Control"] = f"public, max-age={METADATA_MAX_AGE}"
    # Discovery and JWKS may be read cross-origin by browser apps (RFC 9700 §2.6).
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@blueprint.get("/.well-known/oauth-authorization-server")
async def oauth_authorization_server() -> Response:
    # RFC 8414 §3: the same document under the OAuth well-known name.
    return await openid_configuration()


@blueprint.get("/jwks")
async def jwks() -> Response:
    response = jsonify(runtime().keys.jwks())
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.content_type = "application/jwk-set+json"
    return response


# --------------------------------------------------------------------------------------------------
# Authorization endpoint


def _authorization_response(target: RedirectTarget, params: dict[str, str]) -> Response:
    """Send ``params`` to the verified redirect URI with ``state`` and ``iss`` (RFC 9207)."""
    payload = dict(params)
    if target.state is not None:
        payload["state"] = target.state
    payload["iss"] = runtime().settings.issuer
    if target.response_mode == "form_post":
        return cast(Response, _FormPost(target.redirect_uri, payload))
    separator = "&" if urlsplit(target.redirect_uri).query else "?"
    return see_other(f"{target.redirect_uri}{separator}{urlencode(payload)}")


class _FormPost:
    """OAuth 2.0 Form Post Response Mode: an auto-submitting form (rendered lazily by Quart)."""

    def __init__(self, action: str, fields: dict[str, str]) -> None:
        self.action = action
        self.fields = fields


async def _render_form_post(form: _FormPost) -> Response:
    html = await render_template("oauth/form_post.html", action=form.action, fields=form.fields)
    response = Response(html, content_type="text/html; charset=utf-8")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(form.action))
    response.headers["Content-Security-Policy"] = content_security_policy(
        g.get("csp_nonce"), form_action=origin, default_src="'none'"
    )
    return _no_store(response)


async def _respond(result: Response | _FormPost) -> Response:
    if isinstance(result, _FormPost):
        return await _render_form_post(result)
    return result


def _error_redirect(error: errors.RedirectableError, target: RedirectTarget) -> Response | _FormPost:
    return _authorization_response(target, error.to_dict())


async def _return_error(
    client: OAuthClient, error: errors.RedirectableError, target: RedirectTarget, *, prompt_none: bool
) -> Response:
    """A redirectable error for the verified ``target``. RFC 9700 §4.11.2: the IdP authenticates
    the user before it redirects to the client, even with an error response, except for
    prompt=none (silent authentication). With nobody signed in, the error waits in an interaction
    bound to this browser until the user signs in (see ``resume``)."""
    if prompt_none or await current_session() is not None:
        return await _respond(_error_redirect(error, target))
    binding = _usable_binding(read_cookie(INTERACTION_COOKIE))
    parked = await runtime().interactions.park_error(client.id, target, error.to_dict(), binding)
    return _bind_browser(see_other(_login_location(parked.id)), binding)


async def _params() -> Any:
    if request.method == "POST":
        if request.mimetype != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType("The authorization request must be form-encoded.")
        return await request.form
    return request.args


@pages.route("/authorize", methods=["GET", "POST"])
async def authorize() -> Response:
    params = await _params()
    client = await find_client(runtime().db, requested_client_id(params))
    try:
        auth_request = parse_authorization_request(client, params)
    except AuthorizationErrorRedirect as exc:
        return await _return_error(client, exc.error, exc.target, prompt_none=asks_prompt_none(params))
    return await _continue(client, auth_request, None)


@pages.get("/authorize/resume/<interaction_id>")
async def resume(interaction_id: str) -> Response:
    parked = await _load_parked(interaction_id)
    if isinstance(parked, ParkedError):
        return await _deliver_parked_error(parked)
    client = await find_client(runtime().db, parked.request.client_id)
    return await _continue(client, parked.request, parked)


_INTERACTION_GONE = (
    "This sign-in request has expired or was started in another browser. Return to the application and start again."
)


async def _load_parked(interaction_id: str) -> Interaction | ParkedError:
    parked = await runtime().interactions.load(interaction_id, read_cookie(INTERACTION_COOKIE))
    if parked is None:
        # Never redirect here: the request can't be tied to this browser any more.
        raise InvalidRequest(_INTERACTION_GONE)
    return parked


async def _load_interaction(interaction_id: str) -> Interaction:
    parked = await _load_parked(interaction_id)
    if not isinstance(parked, Interaction):
        raise InvalidRequest(_INTERACTION_GONE)  # a parked error has no consent step
    return parked


async def _deliver_parked_error(parked: ParkedError) -> Response:
    """The error response held back by ``_return_error``, once the user has signed in."""
    rt = runtime()
    if await current_session() is None:
        return _bind_browser(see_other(_login_location(parked.id)), read_cookie(INTERACTION_COOKIE))
    await find_client(rt.db, parked.client_id)  # disabled meanwhile: fatal, no redirect
    if not await rt.interactions.finish(parked.id):
        raise InvalidRequest("This sign-in request has already been completed.")
    return await _respond(_authorization_response(parked.target, parked.response))


def _hint_user(client: OAuthClient, hint: str | None) -> tuple[bool, str | None]:
    """(valid, user id) for an id_token_hint; expired hints are fine (OIDC Core §3.1.2.1)."""
    if hint is None:
        return True, None
    rt = runtime()
    try:
        claims = rt.tokens.verify(hint, typ=ID_TOKEN_TYP, audience=None, check_expiry=False)
    except TokenInvalid:
        return False, None
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    owner = client if client.id in audiences else None
    return True, rt.subjects.user_id_for(owner, str(claims.get("sub")))


async def _park(
    request_: AuthorizationRequest, interaction: Interaction | None, session: BrowserSession | None, next_path: str
) -> Response:
    """Start (or keep) an interaction and send the browser to a login or consent page."""
    rt = runtime()
    binding = read_cookie(INTERACTION_COOKIE)
    if interaction is None:
        binding = _usable_binding(binding)
        interaction = await rt.interactions.start(request_, binding, session.auth_id if session else None)
    if next_path == "login":
        location = _login_location(interaction.id, request_.login_hint)
    elif next_path == "register":
        location = f"/register?{urlencode({'return_to': _resume_path(interaction.id)})}"
    else:
        location = f"/authorize/consent/{interaction.id}"
    return _bind_browser(see_other(location), binding)


def _usable_binding(binding: str | None) -> str:
    """The browser's interaction binding, or a new one."""
    return binding if binding and 20 <= len(binding) <= 100 else random_token(32)


def _bind_browser(response: Response, binding: str | None) -> Response:
    """Set (or extend) the cookie that ties parked interactions to this browser."""
    if binding:
        set_cookie(response, INTERACTION_COOKIE, binding, max_age=runtime().interactions.ttl)
    return response


def _resume_path(interaction_id: str) -> str:
    return f"/authorize/resume/{interaction_id}"


def _login_location(interaction_id: str, login_hint: str | None = None) -> str:
    query = {"return_to": _resume_path(interaction_id)}
    if login_hint:
        query["login_hint"] = login_hint
    return f"/login?{urlencode(query)}"


async def _continue(
    client: OAuthClient, req: AuthorizationRequest, interaction: Interaction | None, *, consented: bool = False
) -> Response:
    rt = runtime()
    target = req.target
    prompt = set(req.prompt)
    session = await current_session()
    now = int(time.time())
    # Authenticated during this very interaction: satisfies prompt=login and max_age. auth_time has
    # one-second resolution, so the authentication must also be a new one (auth_id changes at every
    # sign-in; the sid does not when the same user signs in again).
    fresh = (
        interaction is not None
        and session is not None
        and session.auth_id != interaction.prior_auth_id
        and session.auth_time >= interaction.created_at
    )

    hint_valid, hint_user_id = _hint_user(client, req.id_token_hint)
    if not hint_valid:
        error = errors.InvalidAuthorizationRequest("id_token_hint is not an ID token issued by this server.")
        return await _return_error(client, error, target, prompt_none="none" in prompt)

    user: User | None = None
    if session is not None:
        async with rt.db.session() as db_session:
            user = await UserRepository(db_session).get(session.user_id)
        if user is None or user.disabled:
            await rt.sessions.end(session, reason="account_disabled")
            session, user = None, None

    # OpenID Connect Initiating User Registration 1.0: prompt=create shows the sign-up page; the
    # account then signs in (after verifying its address) and the request resumes.
    if "create" in prompt and not fresh and rt.settings.accounts.registration_enabled:
        return await _park(req, interaction, session, "register")

    login_needed = (
        session is None
        or (bool(prompt & {"login", "select_account", "create"}) and not fresh)
        # OIDC Core §3.1.2.1: "max_age=0 is equivalent to prompt=login" (auth_time has 1 s resolution).
        or (req.max_age is not None and (req.max_age == 0 or now - session.auth_time > req.max_age) and not fresh)
        or (hint_user_id is not None and session.user_id != hint_user_id)
        # Step-up (OIDC Core §3.1.2.1 acr_values): sign in again, with the second factor, when the
        # session's class is below every requested one — only if the user has a second factor to
        # use; otherwise the ID token says truthfully what was achieved.
        or (
            not fresh
            and user is not None
            and not authn.satisfies(session.acr, req.acr_values)
            and await mfa.has_second_factor(rt.db, user.id)
        )
    )
    if login_needed:
        if "none" in prompt:
            return await _respond(_error_redirect(errors.LoginRequired(), target))
        return await _park(req, interaction, session, "login")
    assert session is not None and user is not None

    if not consented and not client.first_party:
        granted = await consents.granted_scopes(rt.db, user.id, client.id)
        if "consent" in prompt or not set(req.scopes) <= granted:
            if "none" in prompt:
                return await _respond(_error_redirect(errors.ConsentRequired(), target))
            return await _park(req, interaction, session, "consent")

    if interaction is not None and not await rt.interactions.finish(interaction.id):
        raise InvalidRequest("This sign-in request has already been completed.")
    issued = await issue_authorization_code(
        rt.db,
        req,
        user_id=user.id,
        session_id=session.sid,
        auth_time=session.auth_time,
        amr=session.amr,
        acr=authn.acr_claim(session.acr, req.acr_values),
        ttl=rt.settings.tokens.authorization_code_ttl,
    )
    # The interaction cookie stays: it binds the browser, and other interactions started in other
    # tabs of the same browser still need it (it expires with them).
    return await _respond(_authorization_response(target, {"code": issued.code}))


@pages.route("/authorize/consent/<interaction_id>", methods=["GET", "POST"])
async def consent(interaction_id: str) -> Response:
    rt = runtime()
    interaction = await _load_interaction(interaction_id)
    client = await find_client(rt.db, interaction.request.client_id)
    session = await current_session()
    if session is None:
        return see_other(f"/authorize/resume/{interaction.id}")
    req = interaction.request
    if request.method == "GET":
        let_forms_leave_site()  # Allow and Deny both end at the client's redirect URI
        html = await render_template(
            "oauth/consent.html",
            client=client,
            scopes=[(scope, SCOPE_DESCRIPTIONS.get(scope, scope)) for scope in req.scopes],
            interaction_id=interaction.id,
            csrf_token=csrf_token(),
            redirect_host=urlsplit(req.redirect_uri).netloc or req.redirect_uri,
        )
        return _no_store(Response(html, content_type="text/html; charset=utf-8"))
    await require_csrf()
    decision = (await request.form).get("decision")
    if decision not in ("allow", "deny"):
        raise InvalidRequest("Choose Allow or Deny.")
    if decision == "deny":
        await rt.interactions.finish(interaction.id)
        return await _respond(_error_redirect(errors.AccessDenied("The user denied the request."), req.target))
    await consents.grant(rt.db, session.user_id, client.id, req.scopes)
    await rt.events.publish(ConsentGranted(user_id=session.user_id, client=client.id, scopes=tuple(req.scopes)))
    return await _continue(client, req, interaction, consented=True)


# --------------------------------------------------------------------------------------------------
# Token endpoint and client-authenticated APIs


async def _form() -> Any:
    """The body of a token, introspection or revocation request: form-encoded, and refused before
    anything else happens (authentication, rate limits) when a parameter repeats (RFC 6749 §3.2)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise errors.InvalidRequest("The request body must be application/x-www-form-urlencoded.")
    form = await request.form
    reject_repeated(form)
    return form


def _authorization_header() -> str | None:
    """The Authorization header, which carries credentials like a parameter does: two of them are
    refused, not resolved by taking the first (it is not a list-based field, RFC 9110 §5.3)."""
    values = request.headers.getlist("Authorization")
    if len(values) > 1:
        raise errors.InvalidRequest("the Authorization header is repeated")
    return values[0] if values else None


# The endpoints where clients authenticate, and what the 429 says was attempted too often. Each
# has counters of its own (a resource server introspecting a lot can't starve the same client's
# token requests) under the [rate_limits] token_per_ip / token_per_client settings.
CLIENT_AUTH_ENDPOINTS = {
    "/token": "token requests",
    "/introspect": "introspection requests",
    "/revoke": "revocation requests",
}


async def _authenticated_client(form: Any, endpoint: str) -> OAuthClient:
    """Client authentication for the token (RFC 6749 §2.3), introspection (RFC 7662 §2.1) and
    revocation (RFC 7009 §2.1) endpoints, with their rate limits (ASVS 6.3.1, 15.2.2)."""
    rt = runtime()
    what = CLIENT_AUTH_ENDPOINTS[endpoint]
    authorization = _authorization_header()
    # Before authentication only the address is counted: secret guessing is limited, but client
    # ids are public, so failures counted per client would let anyone lock a client out.
    await enforce_limits({"token_per_ip": f"{endpoint} {client_ip()}"}, what)
    credentials = parse_client_credentials(authorization, form)
    client = await authenticate_client(
        rt.db, rt.kv, credentials, issuer=rt.settings.issuer, endpoint_url=f"{rt.settings.issuer}{endpoint}"
    )
    # Only an authenticated client spends its own budget. (An assertion refused with 429 here is
    # spent: its jti was recorded while authenticating, so a replayed one can't use the budget.)
    await enforce_limits({"token_per_client": f"{endpoint} {client.id}"}, what)
    return client


@blueprint.post("/token")
async def token() -> Response:
    form = await _form()
    client = await _authenticated_client(form, "/token")
    result = await handle_token_request(runtime().grants, client, form)
    return _no_store(jsonify(result))


async def _bearer_token() -> str:
    header = _authorization_header()
    form_token = None
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        form_token = single_value(await request.form, "access_token")  # RFC 6750 §2.2, RFC 6749 §3.2
    if header and form_token:
        raise errors.InvalidRequest("Send the access token in one place only (RFC 6750 §2).")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise errors.InvalidToken("The Authorization header must be a Bearer token.")
        return value.strip()
    if form_token:
        return str(form_token)
    # RFC 6750 §3.1: no error code when the request carried no token at all.
    raise errors.BearerTokenMissing()


@blueprint.route("/userinfo", methods=["GET", "POST"])
async def userinfo() -> Response:
    rt = runtime()
    access_token = await _bearer_token()
    try:
        claims = await rt.tokens.verify_access_token(access_token)
    except TokenInvalid:
        raise errors.InvalidToken() from None
    scopes = str(claims.get("scope", "")).split()
    if "openid" not in scopes:
        raise errors.InsufficientScope(
            "The access token was not issued for OpenID Connect (scope openid).", scope="openid"
        )
    async with rt.db.session() as db_session:
        client = await ClientRepository(db_session).get(str(claims.get("client_id")))
        user_id = rt.subjects.user_id_for(client, str(claims["sub"])) if client else None
        user = await UserRepository(db_session).get(user_id) if user_id else None
    if user is None or user.disabled or client is None or client.disabled:
        raise errors.InvalidToken("The user or client of this token no longer exists or is disabled.")
    body = user_claims(user, scopes, str(claims["sub"]), f"{rt.settings.issuer}/pictures")
    return _no_store(jsonify(body))


async def _introspect_refresh(token_value: str, client: OAuthClient) -> dict[str, Any] | None:
    rt = runtime()
    try:
        claims = rt.tokens.verify(token_value, typ=REFRESH_TOKEN_TYP, audience=rt.settings.issuer)
    except TokenInvalid:
        return None
    row = await find_refresh_token(rt.db, str(claims.get("jti")))
    if row is None or row.used_at or row.revoked_at or row.client_id != client.id:
        return None
    return {**claims, "token_type": "refresh_token"}


async def _introspect_access(token_value: str, client: OAuthClient) -> dict[str, Any] | None:
    try:
        claims = await runtime().tokens.verify_access_token(token_value)
    except TokenInvalid:
        return None
    if claims.get("client_id") != client.id:
        return None  # a client may only introspect its own tokens
    return {**claims, "token_type": "Bearer"}


async def _subject_active(client: OAuthClient, subject: str) -> bool:
    """A token stops being active when its user is disabled or deleted (client_credentials: the client)."""
    rt = runtime()
    if subject == client.id:
        return not client.disabled
    user_id = rt.subjects.user_id_for(client, subject)
    async with rt.db.session() as db_session:
        user = await UserRepository(db_session).get(user_id) if user_id else None
    return user is not None and not user.disabled


@blueprint.post("/introspect")
async def introspect() -> Response:
    """RFC 7662: active only for an unexpired, unrevoked token of the calling client."""
    form = await _form()
    client = await _authenticated_client(form, "/introspect")
    if client.client_type == "public":
        # RFC 7662 §2.1: the endpoint requires client authentication; public clients have none.
        raise errors.InvalidClient("Public clients cannot use the introspection endpoint.")
    token_value = form.get("token")
    if not token_value:
        raise errors.InvalidRequest("token is required")
    order = [_introspect_access, _introspect_refresh]
    if form.get("token_type_hint") == "refresh_token":
        order.reverse()
    for inspect in order:
        result = await inspect(token_value, client)
        if result is not None and await _subject_active(client, str(result.get("sub"))):
            body = {"active": True}
            body.update(
                {
                    k: result[k]
                    for k in (
                        "scope",
                        "client_id",
                        "sub",
                        "exp",
                        "iat",
                        "iss",
                        "aud",
                        "jti",
                        "token_type",
                        "sid",
                        "auth_time",
                    )
                    if k in result
                }
            )
            return _no_store(jsonify(body))
    return _no_store(jsonify(active=False))


@blueprint.post("/revoke")
async def revoke() -> Response:
    """RFC 7009: revoking a refresh token ends its family and the access tokens issued from it."""
    rt = runtime()
    form = await _form()
    client = await _authenticated_client(form, "/revoke")
    token_value = form.get("token")
    if not token_value:
        raise errors.InvalidRequest("token is required")
    hint = form.get("token_type_hint")
    if hint not in (None, "", "access_token", "refresh_token"):
        raise errors.UnsupportedTokenType(f"token_type_hint {hint[:40]!r} is not supported")
    claims = rt.tokens.peek_claims(token_value)
    if claims is None:
        return _no_store(Response("", status=200))  # RFC 7009 §2.2: invalid tokens need no error
    if claims.get("client_id") != client.id:
        raise errors.InvalidRequest("The token was not issued to this client.")
    jti = str(claims.get("jti"))
    refresh = await find_refresh_token(rt.db, jti)
    if refresh is not None:
        await revoke_grant(
            rt.grants, refresh.family_id, client_id=client.id, user_id=refresh.user_id, reason="client_request"
        )
    else:
        await rt.tokens.revoke_access_token(jti, int(claims.get("exp", 0)))
    return _no_store(Response("", status=200))


# --------------------------------------------------------------------------------------------------
# RP-Initiated Logout 1.0


@pages.route("/logout", methods=["GET", "POST"])
async def end_session() -> Response:
    rt = runtime()
    params = await _params()
    hint = params.get("id_token_hint") or None
    redirect_to = params.get("post_logout_redirect_uri") or None
    state = params.get("state") or None
    client_id = params.get("client_id") or None

    hint_claims: dict[str, Any] | None = None
    if hint is not None:
        try:
            hint_claims = rt.tokens.verify(hint, typ=ID_TOKEN_TYP, audience=None, check_expiry=False)
        except TokenInvalid:
            raise InvalidRequest("The id_token_hint is not a valid ID token issued by this server.") from None
        audience = hint_claims.get("aud")
        hint_client = audience if isinstance(audience, str) else (audience[0] if audience else None)
        if client_id is not None and client_id != hint_client:
            raise InvalidRequest("client_id does not match the id_token_hint.")
        client_id = hint_client

    client: OAuthClient | None = None
    if client_id is not None:
        async with rt.db.session() as db_session:
            client = await ClientRepository(db_session).get(str(client_id))
        if client is None:
            raise InvalidRequest("The client is unknown.")
    if redirect_to is not None:
        # RP-Initiated Logout §3: only a URI registered for the identified client, matched exactly.
        if client is None:
            raise InvalidRequest("post_logout_redirect_uri needs an id_token_hint or client_id.")
        if redirect_to not in client.post_logout_redirect_uris:
            raise InvalidRequest("The post_logout_redirect_uri is not registered for this client.")

    session = await current_session()
    confirmed = False
    if session is not None and hint_claims is not None:
        hint_user = rt.subjects.user_id_for(client, str(hint_claims.get("sub")))
        confirmed = hint_claims.get("sid") == session.sid or hint_user == session.user_id
    if session is not None and not confirmed:
        # ASVS 10.6.2: without a valid hint for this session, the user confirms (no forced logout).
        if request.method == "POST" and (await request.form).get("confirm") == "yes":
            await require_csrf()
        else:
            if redirect_to is not None:
                let_forms_leave_site()  # confirming ends at the post-logout redirect URI
            html = await render_template(
                "oauth/logout_confirm.html",
                csrf_token=csrf_token(),
                fields={
                    k: v
                    for k, v in (
                        ("post_logout_redirect_uri", redirect_to),
                        ("state", state),
                        ("client_id", client.id if client else None),
                    )
                    if v
                },
                client=client,
            )
            return _no_store(Response(html, content_type="text/html; charset=utf-8"))

    if session is not None:
        # Ending the session sends back-channel logout to its clients (a SessionEnded subscriber).
        await rt.sessions.end(session, reason="logout")
        await rt.events.publish(
            LoggedOut(
                user_id=session.user_id,
                sid=session.sid,
                initiated_by="client" if client else "user",
                client=client.id if client else None,
            )
        )
    if redirect_to is not None:
        separator = "&" if urlsplit(redirect_to).query else "?"
        location = redirect_to + (f"{separator}{urlencode({'state': state})}" if state else "")
        response = see_other(location)
    else:
        html = await render_template("oauth/logged_out.html", client=client)
        response = _no_store(Response(html, content_type="text/html; charset=utf-8"))
    clear_cookie(response, SESSION_COOKIE)
    return response
