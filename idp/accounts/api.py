"""The account API (``/api/account/…``): JSON for browser apps acting for the signed-in user.

An RFC 6750 protected resource: the caller presents one of our access tokens in the
``Authorization: Bearer`` header, and only there (no cookies, so no CSRF; no tokens in query
strings or bodies). Only first-party clients may call it: the standard scopes a third-party
application is granted let it *read* claims, not rewrite the profile, change the sign-in address
(which, once confirmed, would let that application reset the password) or read the sign-in
history. Changing the address also needs a recent sign-in (RFC 9470 step-up).

Cross-origin calls are answered for the web origins registered on clients, never with credentials.
The domain work lives in the feature packages (idp.accounts.profile, .security, .sessions); this
module translates HTTP. Bodies, queries and answers are typed models (idp.accounts.api_models),
documented in /openapi.json; the caller is settled in a before_request hook, before any body or
query is read (token 401, user and client 401, first-party 403, scopes 403, then the request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, NoReturn

from quart import Blueprint, Response, current_app, g, request
from quart_schema import RequestSchemaValidationError, validate_querystring, validate_response

from idp import cors
from idp.accounts import api_models as models
from idp.accounts.profile import deletion, pictures, profile
from idp.accounts.profile.profile import EXPORT_FILENAME
from idp.accounts.recovery import passwords
from idp.accounts.security import mfa, passkeys
from idp.accounts.sessions.store import REAUTH_WINDOW, describe_all
from idp.accounts.signin.password import PasswordCheckRefused, reauthenticate
from idp.accounts.users import AccountError
from idp.accounts.web import picture_upload, too_many_attempts
from idp.errors import (
    Conflict,
    Forbidden,
    InsufficientUserAuthentication,
    InvalidToken,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
)
from idp.events import set_actor
from idp.http import runtime
from idp.json_api import InvalidFields, View, document_errors, json_request, render_schema_error
from idp.oauth.resource import BearerGrant, BearerProtector, StoredParties
from idp.openapi import no_content, raw_request
from idp.security.ratelimit import RateLimited
from idp.storage.models import OAuthClient, User
from idp.storage.repositories import UserRepository
from idp.web import client_ip

blueprint = Blueprint("account_api", __name__, url_prefix="/api/account")

# RFC 9470: changing the sign-in address needs a sign-in at most this many seconds old.
EMAIL_CHANGE_MAX_AUTH_AGE = 900
ALLOWED_METHODS = "GET, PATCH, POST, DELETE"
PICTURE_METHODS = "PUT, DELETE"  # /api/account/picture
ALLOWED_HEADERS = "Authorization, Content-Type"
EXPOSED_HEADERS = f"{cors.EXPOSED_HEADERS}, Content-Disposition"
_NEEDS = "_account_api_needs"  # (scopes, max_auth_age) of a view, read by _authenticate

# -- errors (RFC 6750 §3; the same codes as idp.oauth.errors, which accounts may not import) -------


def _invalid(exc: AccountError) -> NoReturn:
    if isinstance(exc, PasswordCheckRefused):
        raise too_many_attempts(exc) from None
    raise InvalidFields({exc.field: exc.message}) from None


blueprint.register_error_handler(RequestSchemaValidationError, render_schema_error)  # query strings


# -- the caller ----------------------------------------------------------------------------------


# The account API is a resource server for the tokens idp.oauth issues, so it is the one module
# of idp.accounts that may use the protocol's bearer protector (tests/unit/test_architecture.py).
Caller = BearerGrant


def _first_party_only(client: OAuthClient) -> None:
    if not client.first_party:
        raise Forbidden("The account API is available to first-party applications only.")


async def authenticate(*scopes: str) -> Caller:
    """The user and first-party client behind the request's access token, which must carry ``scopes``:
    the Bearer header only (RFC 6750 §2.1, never a body or query), checked by the protocol's
    protector; who calls is settled before what the token allows (scopes last)."""
    rt = runtime()
    caller = await BearerProtector(rt.tokens, rt.subjects, StoredParties(rt.units)).authenticate(
        request.headers.getlist("Authorization"),
        scopes=scopes,
        scope_description=f"This request needs the scopes: {' '.join(scopes)}.",
        client_policy=_first_party_only,
        check_scopes_first=False,
    )
    set_actor(caller.user.id)
    return caller


def _require_recent_sign_in(caller: Caller, max_age: int) -> None:
    auth_time = caller.claims.get("auth_time")
    if not isinstance(auth_time, int) or time.time() - auth_time > max_age:
        raise InsufficientUserAuthentication(max_age)


def needs(*scopes: str, max_auth_age: int | None = None) -> Callable[[View], View]:
    """The scopes an operation's token must carry (and how recent its sign-in must be), checked by
    _authenticate before the request is read; documents the 401 and 403 answers."""

    def decorate(view: View) -> View:
        view = document_errors(401, 403)(view)
        setattr(view, _NEEDS, (scopes, max_auth_age))
        return view

    return decorate


@blueprint.before_request
async def _authenticate() -> None:
    """Who calls is settled first, for every route (each declares @needs, or fails closed: 500)."""
    if request.method == "OPTIONS":
        return  # a CORS preflight carries no token (the answer is in _api_headers)
    scopes, max_auth_age = getattr(current_app.view_functions[str(request.endpoint)], _NEEDS)
    g.account_caller = caller = await authenticate(*scopes)
    if max_auth_age is not None:
        _require_recent_sign_in(caller, max_auth_age)


def _caller() -> Caller:
    return g.account_caller


# -- responses -----------------------------------------------------------------------------------


@blueprint.after_request
async def _api_headers(response: Response) -> Response:
    """No caching of personal data; CORS for registered web origins only, never with credentials."""
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if not await runtime().cors.allowed(origin):
        return response
    assert origin is not None
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if request.method == "OPTIONS":
        picture = request.path == f"{blueprint.url_prefix}/picture"
        response.headers["Access-Control-Allow-Methods"] = PICTURE_METHODS if picture else ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = str(cors.PREFLIGHT_MAX_AGE)
    return response


async def _profile(caller: Caller, user: User) -> models.ProfileOut:
    rt = runtime()
    include_email = "email" in caller.scopes
    pending = await profile.pending_email(rt.db, user.id) if include_email else None
    base_url = f"{rt.settings.issuer}/pictures"
    view = profile.profile_view(
        user, subject=caller.subject, include_email=include_email, pending=pending, picture_base_url=base_url
    )
    return models.ProfileOut.model_validate(view)


# -- endpoints -----------------------------------------------------------------------------------


@blueprint.get("/profile")
@needs("openid", "profile")
@validate_response(models.ProfileOut)
async def get_profile() -> models.ProfileOut:
    """The profile; with the email scope, also the address, whether it is verified and a pending change."""
    caller = _caller()
    return await _profile(caller, caller.user)


@blueprint.patch("/profile")
@needs("openid", "profile")
@validate_response(models.ProfileOut)
@json_request(models.ProfilePatch)
async def patch_profile(data: models.ProfilePatch) -> models.ProfileOut:
    """Change the members given (null or blank clears one); answers the updated profile.

    Read-only and unknown members are refused; a refused request changes nothing."""
    caller = _caller()
    body = data.model_dump(exclude_unset=True)
    if "zoneinfo" in body:
        await asyncio.to_thread(profile.time_zones)  # the first call reads the zone database
    try:
        changes = profile.check_profile_update(body)
        user = await profile.update_profile(
            runtime().db, runtime().events, caller.user.id, changes, client_id=caller.client.id
        )
    except AccountError as exc:
        _invalid(exc)
    return await _profile(caller, user)


@blueprint.post("/email")
@needs("openid", "email", max_auth_age=EMAIL_CHANGE_MAX_AUTH_AGE)
@validate_response(models.EmailChangeAccepted, 202)
@json_request(models.EmailChange)
async def change_email(data: models.EmailChange) -> tuple[models.EmailChangeAccepted, int]:
    """Mail a confirmation link to a new address (needs a sign-in at most 15 minutes old).

    The same answer whether or not another account has the address (ASVS 6.3.8)."""
    caller = _caller()
    try:
        await profile.request_email_change(runtime().accounts, caller.user.id, data.email, client_id=caller.client.id)
    except AccountError as exc:
        _invalid(exc)
    return models.EmailChangeAccepted(status="verification_sent"), 202


@blueprint.post("/password")
@needs("openid")
@validate_response(models.PasswordChanged)
@document_errors(429)
@json_request(models.PasswordChange)
async def change_password(data: models.PasswordChange) -> models.PasswordChanged:
    """Change the password (the current one checked as a sign-in attempt); every other session of
    the user ends (ASVS 7.4.3), the one the token was issued in stays."""
    caller, rt = _caller(), runtime()
    sid = caller.claims.get("sid")
    keep = await rt.sessions.by_sid(sid) if isinstance(sid, str) and len(sid) <= 64 else None
    try:
        ended = await passwords.change_password(
            rt.accounts, caller.user.id, data.current_password, data.new_password, keep=keep, ip=client_ip()
        )
    except AccountError as exc:
        _invalid(exc)
    return models.PasswordChanged(sessions_ended=ended)


@blueprint.delete("")
@needs("openid")
@no_content
@document_errors(429)
@json_request(models.PasswordConfirmation)
async def delete_account(data: models.PasswordConfirmation) -> Response:
    """Delete the account and everything held about it; confirmed with the password."""
    try:
        await deletion.delete_account(
            runtime().accounts,
            _caller().user.id,
            password=data.password,
            ip=client_ip(),
            device_token=None,  # no device cookie reaches the API: an unknown browser
            delete_blob=runtime().delete_picture,
        )
    except AccountError as exc:
        _invalid(exc)
    return Response(status=204)


@blueprint.get("/activity")
@needs("openid")
@validate_response(models.ActivityPage)
@document_errors(400)
@validate_querystring(models.ActivityQuery)
async def get_activity(query_args: models.ActivityQuery) -> models.ActivityPage:
    """The user's own audit events, newest first, a page at a time (``before`` pages back)."""
    page = await profile.activity(runtime().db, _caller().user.id, limit=query_args.limit, before=query_args.before)
    return models.ActivityPage.model_validate({"items": page.items, "next": page.next})


@blueprint.get("/export")
@needs("openid", "profile", "email")
@validate_response(models.AccountExport)
async def export() -> tuple[models.AccountExport, int, dict[str, str]]:
    """Everything stored about the account, as a JSON file (never a credential or what stands in for one)."""
    caller = _caller()
    rt = runtime()
    current = caller.claims.get("sid")
    data = await profile.export_account(
        rt.db,
        caller.user.id,
        picture_base_url=f"{rt.settings.issuer}/pictures",
        sessions=await describe_all(
            rt.sessions, rt.db, caller.user.id, current_sid=current if isinstance(current, str) else None
        ),
    )
    if data is None:
        raise InvalidToken("The user or client of this token no longer exists or is disabled.")
    disposition = {"Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"'}
    return models.AccountExport.model_validate(data), 200, disposition


# -- picture -------------------------------------------------------------------------------------


@blueprint.put("/picture")
@needs("openid", "profile")
@validate_response(models.ProfileOut)
@raw_request(models.PICTURE_UPLOAD)
@document_errors(400, 413)
async def put_picture() -> models.ProfileOut:
    """Set the profile picture (PNG, JPEG or WebP, decided by the bytes); answers the profile.

    Stripped of metadata, cropped square and re-encoded; the previous picture's files are deleted."""
    caller = _caller()
    rt = runtime()
    limit = rt.settings.pictures.max_upload_bytes
    data = await picture_upload(limit)
    try:
        await pictures.set_picture(
            rt.accounts, rt.blobs, caller.user.id, data, rt.settings.pictures, client_id=caller.client.id
        )
    except pictures.PictureTooLarge:
        raise PayloadTooLarge(f"The picture may be at most {limit} bytes.") from None
    except AccountError as exc:
        _invalid(exc)
    async with rt.db.session() as db_session:
        user = await UserRepository(db_session).get(caller.user.id)
    assert user is not None
    return await _profile(caller, user)


@blueprint.delete("/picture")
@needs("openid", "profile")
@no_content
@document_errors(400)
async def delete_picture() -> Response:
    """Remove the picture and its files."""
    rt = runtime()
    try:
        await pictures.remove_picture(
            rt.accounts, rt.blobs, _caller().user.id, rt.settings.pictures, client_id=_caller().client.id
        )
    except AccountError as exc:
        _invalid(exc)
    return Response(status=204)


# -- second factors (TOTP, recovery codes, passkeys) ----------------------------------------------
# The same domain functions as the /account/security page. Every change needs the password again
# (ASVS 7.5.1), removing TOTP a current code as well; code attempts count against the mfa limits.


async def _check_password(caller: Caller, password: str) -> None:
    """The ``password`` member, checked as a sign-in attempt from the caller's IP (idp.accounts.signin.password
    .reauthenticate). A Bearer request carries no device cookie, so it counts as an unknown
    browser: the per-account limit and the account-wide lock apply. Too many: 429 rate_limited."""
    try:
        await reauthenticate(runtime().accounts.sign_in, caller.user.id, password, ip=client_ip(), device_token=None)
    except AccountError as exc:
        _invalid(exc)


def _with_password(view: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A view whose body is only the user's current password (ASVS 7.5.1), checked before it runs."""

    @json_request(models.PasswordConfirmation)
    @wraps(view)
    async def checked(*args: Any, data: models.PasswordConfirmation, **kwargs: Any) -> Any:
        await _check_password(_caller(), data.password)
        return await view(_caller(), *args, **kwargs)

    return document_errors(429)(checked)


async def _count_code_attempt(user_id: str) -> None:
    try:
        await runtime().limits.hit_all({"mfa_per_account": user_id, "mfa_per_ip": request.remote_addr or "unknown"})
    except RateLimited as exc:
        raise TooManyRequests(exc.retry_after, "Too many code attempts; try again later.") from None


def _api_binding(caller: Caller) -> str:
    # A ceremony started by this client for this user finishes only with the same pair.
    return f"api:{caller.client.id}:{caller.user.id}"


@blueprint.get("/mfa")
@needs("openid")
@validate_response(models.MfaStatus)
async def get_mfa() -> models.MfaStatus:
    """The second factors: TOTP on or off, recovery codes left, the passkeys, and whether policy requires one."""
    caller = _caller()
    rt = runtime()
    status = await mfa.factor_status(rt.db, caller.user.id)
    return models.MfaStatus(
        totp=status.totp,
        recovery_codes_remaining=status.recovery_codes,
        passkeys=[models.PasskeyOut.of(key) for key in await passkeys.list_passkeys(rt.db, caller.user.id)],
        required=mfa.mfa_required(rt.settings.mfa.required, caller.user),
    )


@blueprint.post("/mfa/totp")
@needs("openid")
@validate_response(models.TotpSetup, 201)
@document_errors(409)
@_with_password
async def start_totp(caller: Caller) -> tuple[models.TotpSetup, int]:
    """Start an authenticator-app setup (replacing an unconfirmed one); 409 when TOTP is on already."""
    try:
        enrolment = await runtime().enrolment.start_totp(caller.user)
    except AccountError as exc:
        raise Conflict(exc.message) from None
    setup = models.TotpSetup(
        credential_id=enrolment.credential_id,
        secret=enrolment.secret,
        otpauth_uri=enrolment.provisioning_uri,
        qr_code=mfa.qr_code(enrolment.provisioning_uri),
    )
    return setup, 201


@blueprint.post("/mfa/totp/confirm")
@needs("openid")
@validate_response(models.RecoveryCodes)
@document_errors(429)
@json_request(models.TotpConfirmation)
async def confirm_totp(data: models.TotpConfirmation) -> models.RecoveryCodes:
    """Turn TOTP on with the app's current code; answers the recovery codes, shown this once."""
    caller = _caller()
    await _count_code_attempt(caller.user.id)
    try:
        codes = await runtime().enrolment.confirm_totp(caller.user.id, data.credential_id, data.code)
    except AccountError as exc:
        _invalid(exc)
    return models.RecoveryCodes(recovery_codes=codes)


@blueprint.delete("/mfa/totp")
@needs("openid")
@no_content
@document_errors(429)
@json_request(models.TotpRemoval)
async def delete_totp(data: models.TotpRemoval) -> Response:
    """Remove TOTP (with the password and a current code), and the recovery codes unless a passkey remains."""
    caller = _caller()
    await _count_code_attempt(caller.user.id)
    await _check_password(caller, data.password)
    rt = runtime()
    if not await mfa.verify_totp(rt.db, rt.encryptor, caller.user.id, data.code):
        raise InvalidFields({"code": "is not correct or was already used"})
    await mfa.disable_totp(rt.db, rt.events, caller.user.id)
    return Response(status=204)


@blueprint.post("/mfa/recovery-codes")
@needs("openid")
@validate_response(models.RecoveryCodes)
@document_errors(409)
@_with_password
async def new_recovery_codes(caller: Caller) -> models.RecoveryCodes:
    """A new set of 10 recovery codes; every earlier code stops working. 409 without a second factor."""
    rt = runtime()
    try:
        codes = await mfa.regenerate_recovery_codes(rt.db, rt.passwords, rt.events, caller.user.id)
    except AccountError as exc:
        raise Conflict(exc.message) from None
    return models.RecoveryCodes(recovery_codes=codes)


@blueprint.post("/passkeys/options")
@needs("openid")
@validate_response(models.PasskeyOptions)
@_with_password
async def passkey_options(caller: Caller) -> models.PasskeyOptions:
    """Start adding a passkey: the ceremony id and the options for navigator.credentials.create()."""
    try:
        return models.PasskeyOptions.model_validate(
            await runtime().enrolment.passkey_options(caller.user, binding=_api_binding(caller))
        )
    except AccountError as exc:  # the limit of passkeys per account
        _invalid(exc)


@blueprint.post("/passkeys")
@needs("openid")
@validate_response(models.PasskeyOut, 201)
@json_request(models.PasskeyRegistration)
async def add_passkey(data: models.PasskeyRegistration) -> tuple[models.PasskeyOut, int]:
    """Finish adding a passkey with the authenticator's answer (once, for the client and user that started it)."""
    caller = _caller()
    try:
        key = await runtime().enrolment.add_passkey(
            caller.user.id,
            binding=_api_binding(caller),
            ceremony=data.ceremony,
            credential=data.credential,
            name=data.name or "Passkey",
        )
    except AccountError as exc:
        _invalid(exc)
    return models.PasskeyOut.of(key), 201


@blueprint.patch("/passkeys/<passkey_id>")
@needs("openid")
@validate_response(models.PasskeyOut)
@document_errors(404)
@json_request(models.PasskeyRename)
async def rename_passkey(passkey_id: str, data: models.PasskeyRename) -> models.PasskeyOut:
    """Rename one of the user's passkeys."""
    try:
        key = await passkeys.rename_passkey(
            runtime().db, runtime().events, _caller().user.id, passkey_id[:64], data.name
        )
    except AccountError as exc:
        if exc.field == "passkey":
            raise NotFound(exc.message) from None
        _invalid(exc)
    return models.PasskeyOut.of(key)


@blueprint.delete("/passkeys/<passkey_id>")
@needs("openid")
@no_content
@document_errors(404)
@_with_password
async def delete_passkey(caller: Caller, passkey_id: str) -> Response:
    """Remove one of the user's passkeys (with the password)."""
    if not await passkeys.remove_passkey(runtime().db, runtime().events, caller.user.id, passkey_id[:64]):
        raise NotFound("There is no such passkey on this account.")
    return Response(status=204)


# -- sessions ------------------------------------------------------------------------------------
# Where the user is signed in. The caller's own session is the one its access token was issued in
# (the token's `sid`); ending another logs that browser out at its next request.


@blueprint.get("/sessions")
@needs("openid")
@validate_response(models.SessionList)
async def list_sessions() -> models.SessionList:
    """The browser sessions where the user is signed in, most recently active first."""
    caller = _caller()
    rt = runtime()
    current = caller.claims.get("sid")
    items = await describe_all(
        rt.sessions, rt.db, caller.user.id, current_sid=current if isinstance(current, str) else None
    )
    return models.SessionList.model_validate({"sessions": items})


async def _reauthenticated(caller: Caller, data: models.Reauthentication) -> None:
    """ASVS 7.5.2: ending another session needs a fresh authentication: the token's sign-in is at
    most REAUTH_WINDOW old, or the body carries the password. Otherwise RFC 9470's challenge tells
    the app to sign the user in again with max_age."""
    if data.password is not None:
        await _check_password(caller, data.password)
        return
    _require_recent_sign_in(caller, REAUTH_WINDOW)


@blueprint.delete("/sessions/<sid>")
@needs("openid")
@no_content
@document_errors(404, 429)
@json_request(models.Reauthentication, optional=True)
async def end_session(sid: str, data: models.Reauthentication) -> Response:
    """End one of the user's sessions; another than the token's own needs a fresh sign-in or the password."""
    caller = _caller()
    own = sid == caller.claims.get("sid")
    if not own:
        await _reauthenticated(caller, data)
    reason = "logout" if own else "ended_by_user"
    if len(sid) > 64 or not await runtime().sessions.end_by_sid(caller.user.id, sid, reason=reason):
        raise NotFound("There is no such session of this account (it may have ended already).")
    return Response(status=204)


@blueprint.post("/sessions/end-others")
@needs("openid")
@validate_response(models.SessionsEnded)
@document_errors(409, 429)
@json_request(models.Reauthentication, optional=True)
async def end_other_sessions(data: models.Reauthentication) -> models.SessionsEnded:
    """End every session but the token's own (needs a fresh sign-in or the password); 409 when that one has ended."""
    caller = _caller()
    await _reauthenticated(caller, data)
    rt = runtime()
    current = caller.claims.get("sid")
    session = await rt.sessions.by_sid(current) if isinstance(current, str) else None
    if session is None or session.user_id != caller.user.id:
        raise Conflict(
            "The session this access token was issued in has ended, so there is no 'this session' to keep. "
            "End sessions one by one, or sign in again."
        )
    ended = await rt.sessions.end_all_for_user(caller.user.id, keep=session.digest, reason="ended_by_user")
    return models.SessionsEnded(ended=len(ended))
