"""Protocol endpoints: the only protocol module that imports Quart.

Two blueprints by audience: ``oauth`` answers JSON (discovery, JWKS, token, userinfo,
introspection, revocation); ``oauth_pages`` serves browsers (authorization, consent, logout) and
renders its errors as HTML. Each route reads the request, calls one function of the protocol
core, and renders what it returns: the rules live in the modules it calls.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response, g, jsonify, render_template, request

from idp import cors
from idp.errors import InvalidRequest, UnsupportedMediaType
from idp.http import runtime
from idp.oauth import errors, interactions, introspection, logout, revocation
from idp.oauth import interaction_policy as policy
from idp.oauth.authorize import (
    AuthorizationErrorRedirect,
    AuthorizationRequest,
    RedirectTarget,
    asks_prompt_none,
    find_client,
    parse_authorization_request,
    requested_client_id,
    response_parameters,
    with_query,
)
from idp.oauth.client_auth import authenticator
from idp.oauth.discovery import metadata_document
from idp.oauth.grants import token_response
from idp.oauth.interaction_policy import AuthorizationState
from idp.oauth.interactions import Interaction, ParkedError
from idp.oauth.keys import ConstantDocument
from idp.oauth.params import single_header, single_value, single_values
from idp.oauth.resource import BearerProtector, StoredParties
from idp.oauth.scopes import describe_scope
from idp.oauth.store import Authenticate
from idp.oauth.userinfo import userinfo_claims
from idp.security.headers import content_security_policy
from idp.storage.models import OAuthClient
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


async def _page(template: str, **context: Any) -> Response:
    html = await render_template(template, **context)
    return _no_store(Response(html, content_type="text/html; charset=utf-8"))


# --------------------------------------------------------------------------------------------------
# Discovery and keys


def discovery_document(rt: Any) -> ConstantDocument:
    return metadata_document(
        rt.settings.issuer,
        tuple(rt.keys.algorithms),
        pairwise=rt.subjects.pairwise_available,
        registration=rt.settings.accounts.registration_enabled,
    )


def _constant(document: ConstantDocument, content_type: str, max_age: int) -> Response:
    """A pre-encoded document, or 304 when the client holds this version (If-None-Match)."""
    if request.if_none_match.contains_weak(document.etag.strip('"')):  # RFC 9110 §13.1.2: weak
        response = Response(status=304)
    else:
        response = Response(document.body, content_type=content_type)
    response.headers["ETag"] = document.etag
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    # Discovery and JWKS may be read cross-origin by browser apps (RFC 9700 §2.6).
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@blueprint.get("/.well-known/openid-configuration")
async def openid_configuration() -> Response:
    return _constant(discovery_document(runtime()), "application/json", METADATA_MAX_AGE)


@blueprint.get("/.well-known/oauth-authorization-server")
async def oauth_authorization_server() -> Response:
    # RFC 8414 §3: the same document under the OAuth well-known name.
    return await openid_configuration()


@blueprint.get("/jwks")
async def jwks() -> Response:
    return _constant(runtime().keys.jwks_document(), "application/jwk-set+json", JWKS_MAX_AGE)


# --------------------------------------------------------------------------------------------------
# Authorization endpoint


async def _authorization_response(target: RedirectTarget, params: dict[str, str]) -> Response:
    """Send ``params`` to the verified redirect URI: a 303, or with response_mode=form_post an
    auto-submitting form (OAuth 2.0 Form Post Response Mode)."""
    payload = response_parameters(target, params, runtime().settings.issuer)
    if target.response_mode == "form_post":
        response = await _page("oauth/form_post.html", action=target.redirect_uri, fields=payload)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(target.redirect_uri))
        response.headers["Content-Security-Policy"] = content_security_policy(
            g.get("csp_nonce"), form_action=origin, default_src="'none'"
        )
        return response
    return see_other(with_query(target.redirect_uri, payload))


def _bind_browser(response: Response, binding: str | None) -> Response:
    """Set (or extend) the cookie that ties parked interactions to this browser."""
    if binding:
        set_cookie(response, interactions.COOKIE_NAME, binding, max_age=runtime().interactions.ttl)
    return response


async def _park(state: AuthorizationState, outcome: policy.Interact) -> Response:
    """Start (or keep) an interaction and send the browser to a login, sign-up or consent page."""
    binding = read_cookie(interactions.COOKIE_NAME)
    interaction = state.interaction
    if interaction is None:
        binding = interactions.usable_binding(binding)
        prior_auth_id = state.session.auth_id if state.session else None
        interaction = await runtime().interactions.start(state.request, binding, prior_auth_id)
    return _bind_browser(see_other(outcome.location(interaction.id, state.request)), binding)


async def _send_error(client: OAuthClient, outcome: policy.RedirectError, target: RedirectTarget) -> Response:
    """The error at once, or parked in an interaction bound to this browser until the user has
    signed in (see ``resume``)."""
    if not outcome.wait_for_sign_in:
        return await _authorization_response(target, outcome.error.to_dict())
    binding = interactions.usable_binding(read_cookie(interactions.COOKIE_NAME))
    parked = await runtime().interactions.park_error(client.id, target, outcome.error.to_dict(), binding)
    return _bind_browser(see_other(interactions.login_location(parked.id)), binding)


async def _render(state: AuthorizationState, outcome: policy.Outcome) -> Response:
    if isinstance(outcome, policy.RedirectCode):
        # The interaction cookie stays: it binds the browser, and other interactions started in
        # other tabs of the same browser still need it (it expires with them).
        return await _authorization_response(state.request.target, {"code": outcome.code})
    if isinstance(outcome, policy.RedirectError):
        return await _send_error(state.client, outcome, state.request.target)
    return await _park(state, outcome)


def _services() -> policy.StoredAuthorizationServices:
    rt = runtime()
    return policy.StoredAuthorizationServices(
        db=rt.db,
        tokens=rt.tokens,
        subjects=rt.subjects,
        sessions=rt.sessions,
        interactions=rt.interactions,
        events=rt.events,
        registration_enabled=rt.settings.accounts.registration_enabled,
        code_ttl=rt.settings.tokens.authorization_code_ttl,
    )


async def _decide(
    client: OAuthClient, req: AuthorizationRequest, interaction: Interaction | None, *, allow: bool | None = None
) -> Response:
    """The authorization decision for this browser; with ``allow``, after its answer on the consent page."""
    state = AuthorizationState.begin(client, req, await current_session(), interaction, now=int(time.time()))
    services = _services()
    answer = policy.decide(state, services) if allow is None else policy.answer_consent(state, services, allow=allow)
    return await _render(state, await answer)


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
        prompt_none = asks_prompt_none(params)
        # Looked up only when it matters: the session is not even read for prompt=none.
        signed_in = not prompt_none and await current_session() is not None
        outcome = policy.redirect_error(exc.error, prompt_none=prompt_none, signed_in=signed_in)
        return await _send_error(client, outcome, exc.target)
    return await _decide(client, auth_request, None)


@pages.get("/authorize/resume/<interaction_id>")
async def resume(interaction_id: str) -> Response:
    rt = runtime()
    parked = await rt.interactions.resume(interaction_id, read_cookie(interactions.COOKIE_NAME))
    if isinstance(parked, ParkedError):
        # The error response held back until the user signed in.
        if await current_session() is None:
            return _bind_browser(
                see_other(interactions.login_location(parked.id)), read_cookie(interactions.COOKIE_NAME)
            )
        await find_client(rt.db, parked.client_id)  # disabled meanwhile: fatal, no redirect
        if not await rt.interactions.finish(parked.id):
            raise InvalidRequest("This sign-in request has already been completed.")
        return await _authorization_response(parked.target, parked.response)
    client = await find_client(rt.db, parked.request.client_id)
    return await _decide(client, parked.request, parked)


@pages.route("/authorize/consent/<interaction_id>", methods=["GET", "POST"])
async def consent(interaction_id: str) -> Response:
    rt = runtime()
    interaction = await rt.interactions.resume_request(interaction_id, read_cookie(interactions.COOKIE_NAME))
    client = await find_client(rt.db, interaction.request.client_id)
    session = await current_session()
    if session is None:
        return see_other(f"/authorize/resume/{interaction.id}")
    req = interaction.request
    if request.method == "GET":
        let_forms_leave_site()  # Allow and Deny both end at the client's redirect URI
        return await _page(
            "oauth/consent.html",
            client=client,
            scopes=[(scope, describe_scope(scope)) for scope in req.scopes],
            interaction_id=interaction.id,
            csrf_token=csrf_token(),
            redirect_host=urlsplit(req.redirect_uri).netloc or req.redirect_uri,
        )
    await require_csrf()
    decision = single_value(await request.form, "decision")
    if decision not in ("allow", "deny"):
        raise InvalidRequest("Choose Allow or Deny.")
    return await _decide(client, req, interaction, allow=decision == "allow")


# --------------------------------------------------------------------------------------------------
# Token endpoint and client-authenticated APIs


async def _form() -> dict[str, str]:
    """The body of a token, introspection or revocation request: form-encoded, and refused before
    anything else happens (authentication, rate limits) when a parameter repeats (RFC 6749 §3.2)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise errors.InvalidRequest("The request body must be application/x-www-form-urlencoded.")
    return single_values(await request.form)


def _client_authentication(form: dict[str, str], endpoint: str) -> Authenticate:
    """Client authentication for this request, against the clients of the endpoint's unit of work."""
    rt = runtime()
    authorization = single_header(request.headers.getlist("Authorization"))
    return authenticator(
        endpoint,
        authorization,
        form,
        kv=rt.kv,
        issuer=rt.settings.issuer,
        ip=client_ip(),
        enforce_limits=enforce_limits,
    )


def _protector() -> BearerProtector:
    rt = runtime()
    return BearerProtector(rt.tokens, rt.subjects, StoredParties(rt.units, cached=True))  # UserInfo only reads


@blueprint.post("/token")
async def token() -> Response:
    form = await _form()
    body = await token_response(runtime().grants, form, _client_authentication(form, "/token"))
    return _no_store(jsonify(body))


@blueprint.route("/userinfo", methods=["GET", "POST"])
async def userinfo() -> Response:
    # RFC 6750 §2.2: a form-encoded POST body may carry the token instead of the header.
    form_body = request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded"
    pictures = f"{runtime().settings.issuer}/pictures"
    authorization = request.headers.getlist("Authorization")
    claims = await userinfo_claims(_protector(), authorization, await request.form if form_body else None, pictures)
    return _no_store(jsonify(claims))


@blueprint.post("/introspect")
async def introspect() -> Response:
    rt = runtime()
    form = await _form()
    authenticate = _client_authentication(form, "/introspect")
    body = await introspection.introspection_request(rt.units, rt.tokens, rt.subjects, form, authenticate)
    return _no_store(jsonify(body))


@blueprint.post("/revoke")
async def revoke() -> Response:
    form = await _form()
    await revocation.revocation_request(runtime().grants, form, _client_authentication(form, "/revoke"))
    return _no_store(Response("", status=200))


# --------------------------------------------------------------------------------------------------
# RP-Initiated Logout 1.0


@pages.route("/logout", methods=["GET", "POST"])
async def end_session() -> Response:
    rt = runtime()
    params = await _params()
    logout_request = await logout.parse_logout_request(
        params, tokens=rt.tokens, find_client=StoredParties(rt.units).client
    )
    session = await current_session()
    if session is not None and not logout.hint_confirms(logout_request, session, rt.subjects):
        # ASVS 10.6.2: without a valid hint for this session, the user confirms (no forced logout).
        if request.method == "POST" and single_value(params, "confirm") == "yes":
            await require_csrf()
        else:
            if logout_request.post_logout_redirect_uri is not None:
                let_forms_leave_site()  # confirming ends at the post-logout redirect URI
            return await _page(
                "oauth/logout_confirm.html",
                csrf_token=csrf_token(),
                fields=logout_request.confirmation_fields(),
                client=logout_request.client,
            )
    await logout.log_out(session, logout_request, sessions=rt.sessions, events=rt.events, subjects=rt.subjects)
    location = logout_request.redirect_location()
    response = see_other(location) if location else await _page("oauth/logged_out.html", client=logout_request.client)
    clear_cookie(response, SESSION_COOKIE)
    return response
