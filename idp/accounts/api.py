"""The account API (``/api/account/…``): JSON for browser apps acting for the signed-in user.

An RFC 6750 protected resource: the caller presents one of our access tokens in the
``Authorization: Bearer`` header, and only there (no cookies, so no CSRF; no tokens in query
strings or bodies). Only first-party clients may call it: the standard scopes a third-party
application is granted let it *read* claims, not rewrite the profile, change the sign-in address
(which, once confirmed, would let that application reset the password) or read the sign-in
history. Changing the address also needs a recent sign-in (RFC 9470 step-up).

Cross-origin calls are answered for the web origins registered on clients, never with credentials.
The domain work lives in the feature packages (idp.accounts.profile, .security, .sessions); this
module translates HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NoReturn

from quart import Blueprint, Response, jsonify, request

from idp import cors
from idp.accounts.profile import deletion, pictures, profile
from idp.accounts.profile.profile import EXPORT_FILENAME
from idp.accounts.security import mfa, passkeys
from idp.accounts.sessions.store import REAUTH_WINDOW, describe_all
from idp.accounts.signin.password import PasswordCheckRefused, reauthenticate
from idp.accounts.users import AccountError
from idp.accounts.web import InvalidField, json_body, too_many_attempts
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
from idp.oauth.resource import BearerGrant, BearerProtector, StoredParties
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


# -- errors (RFC 6750 §3; the same codes as idp.oauth.errors, which accounts may not import) -------


def _invalid(exc: AccountError) -> NoReturn:
    if isinstance(exc, PasswordCheckRefused):
        raise too_many_attempts(exc) from None
    raise InvalidField(exc.field, exc.message) from None


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


async def _profile_response(caller: Caller, user: User) -> Response:
    rt = runtime()
    include_email = "email" in caller.scopes
    pending = await profile.pending_email(rt.db, user.id) if include_email else None
    return jsonify(
        profile.profile_view(
            user,
            subject=caller.subject,
            include_email=include_email,
            pending=pending,
            picture_base_url=f"{rt.settings.issuer}/pictures",
        )
    )


# -- endpoints -----------------------------------------------------------------------------------


@blueprint.get("/profile")
async def get_profile() -> Response:
    caller = await authenticate("openid", "profile")
    return await _profile_response(caller, caller.user)


@blueprint.patch("/profile")
async def patch_profile() -> Response:
    caller = await authenticate("openid", "profile")
    body = await json_body()
    if "zoneinfo" in body:
        await asyncio.to_thread(profile.time_zones)  # the first call reads the zone database
    try:
        changes = profile.check_profile_update(body)
        user = await profile.update_profile(
            runtime().db, runtime().events, caller.user.id, changes, client_id=caller.client.id
        )
    except AccountError as exc:
        _invalid(exc)
    return await _profile_response(caller, user)


@blueprint.post("/email")
async def change_email() -> tuple[Response, int]:
    caller = await authenticate("openid", "email")
    _require_recent_sign_in(caller, EMAIL_CHANGE_MAX_AUTH_AGE)
    body = await json_body()
    for key in body:
        if key != "email":
            raise InvalidField(profile.field_label(key), "is not a member of this request")
    email = body.get("email")
    if not isinstance(email, str):
        raise InvalidField("email", "is required (a string)")
    try:
        await profile.request_email_change(runtime().accounts, caller.user.id, email, client_id=caller.client.id)
    except AccountError as exc:
        _invalid(exc)
    # The same answer whether or not another account has the address (ASVS 6.3.8).
    return jsonify(status="verification_sent"), 202


@blueprint.delete("")
async def delete_account() -> Response:
    """Delete the account and everything held about it; confirmed with the password."""
    caller = await authenticate("openid")
    body = await json_body()
    for key in body:
        if key != "password":
            raise InvalidField(profile.field_label(key), "is not a member of this request")
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise InvalidField("password", "is required to confirm the deletion (a string)")
    try:
        await deletion.delete_account(
            runtime().accounts,
            caller.user.id,
            password=password,
            ip=client_ip(),
            device_token=None,  # no device cookie reaches the API: an unknown browser
            delete_blob=runtime().delete_picture,
        )
    except AccountError as exc:
        _invalid(exc)
    return Response("", status=204)


@blueprint.get("/activity")
async def get_activity() -> Response:
    caller = await authenticate("openid")
    try:
        limit, before = profile.parse_activity_query(request.args.get("limit"), request.args.get("before"))
    except AccountError as exc:
        _invalid(exc)
    page = await profile.activity(runtime().db, caller.user.id, limit=limit, before=before)
    return jsonify(items=page.items, next=page.next)


@blueprint.get("/export")
async def export() -> Response:
    caller = await authenticate("openid", "profile", "email")
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
    response = jsonify(data)
    response.headers["Content-Disposition"] = f'attachment; filename="{EXPORT_FILENAME}"'
    return response


# -- picture -------------------------------------------------------------------------------------


async def _picture_upload(limit: int) -> bytes:
    """The uploaded image: the raw body (any declared type: the bytes decide) or the ``picture``
    part of a multipart/form-data body."""
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise PayloadTooLarge(f"The picture may be at most {limit} bytes.")
    if request.mimetype == "multipart/form-data":
        files = await request.files
        upload = files.get("picture")
        if upload is None:
            raise InvalidField("picture", "is required (a multipart part named picture)")
        return upload.read(limit + 1)
    return await request.get_data(cache=False, as_text=False, parse_form_data=False)


@blueprint.put("/picture")
async def put_picture() -> Response:
    """Set the profile picture; answers the profile with the new `picture` URL."""
    caller = await authenticate("openid", "profile")
    rt = runtime()
    limit = rt.settings.pictures.max_upload_bytes
    data = await _picture_upload(limit)
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
    return await _profile_response(caller, user)


@blueprint.delete("/picture")
async def delete_picture() -> Response:
    caller = await authenticate("openid", "profile")
    rt = runtime()
    try:
        await pictures.remove_picture(
            rt.accounts, rt.blobs, caller.user.id, rt.settings.pictures, client_id=caller.client.id
        )
    except AccountError as exc:
        _invalid(exc)
    return Response("", status=204)


# -- second factors (TOTP, recovery codes, passkeys) ----------------------------------------------
# The same domain functions as the /account/security page. Every change needs the password again
# (ASVS 7.5.1), removing TOTP a current code as well; code attempts count against the mfa limits.


def _only(body: dict[str, Any], *allowed: str) -> None:
    for key in body:
        if key not in allowed:
            raise InvalidField(profile.field_label(key), "is not a member of this request")


def _string(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidField(key, f"is required ({what})")
    return value


async def _with_password(*members: str) -> tuple[Caller, dict[str, Any]]:
    """The caller and its body, which may hold only ``password`` and ``members`` and must carry the
    user's current password (ASVS 7.5.1)."""
    caller = await authenticate("openid")
    body = await json_body()
    _only(body, "password", *members)
    await _check_password(caller, body)
    return caller, body


async def _check_password(caller: Caller, body: dict[str, Any]) -> None:
    """The ``password`` member, checked as a sign-in attempt from the caller's IP (idp.accounts.signin.password
    .reauthenticate). A Bearer request carries no device cookie, so it counts as an unknown
    browser: the per-account limit and the account-wide lock apply. Too many: 429 rate_limited."""
    password = _string(body, "password", "a string")
    try:
        await reauthenticate(runtime().accounts.sign_in, caller.user.id, password, ip=client_ip(), device_token=None)
    except AccountError as exc:
        _invalid(exc)


async def _count_code_attempt(user_id: str) -> None:
    try:
        await runtime().limits.hit_all({"mfa_per_account": user_id, "mfa_per_ip": request.remote_addr or "unknown"})
    except RateLimited as exc:
        raise TooManyRequests(exc.retry_after, "Too many code attempts; try again later.") from None


def _passkey_view(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "created_at": profile.iso(key.created_at),
        "last_used_at": profile.iso(key.last_used_at),
        "discoverable": key.discoverable,
        "backed_up": key.backed_up,
        "transports": list(key.transports),
    }


def _api_binding(caller: Caller) -> str:
    # A ceremony started by this client for this user finishes only with the same pair.
    return f"api:{caller.client.id}:{caller.user.id}"


@blueprint.get("/mfa")
async def get_mfa() -> Response:
    caller = await authenticate("openid")
    rt = runtime()
    status = await mfa.factor_status(rt.db, caller.user.id)
    return jsonify(
        totp=status.totp,
        recovery_codes_remaining=status.recovery_codes,
        passkeys=[_passkey_view(key) for key in await passkeys.list_passkeys(rt.db, caller.user.id)],
        required=mfa.mfa_required(rt.settings.mfa.required, caller.user),
    )


@blueprint.post("/mfa/totp")
async def start_totp() -> tuple[Response, int]:
    caller, _body = await _with_password()
    try:
        enrolment = await runtime().enrolment.start_totp(caller.user)
    except AccountError as exc:
        raise Conflict(exc.message) from None
    return (
        jsonify(
            credential_id=enrolment.credential_id,
            secret=enrolment.secret,
            otpauth_uri=enrolment.provisioning_uri,
            qr_code=mfa.qr_code(enrolment.provisioning_uri),
        ),
        201,
    )


@blueprint.post("/mfa/totp/confirm")
async def confirm_totp() -> Response:
    caller = await authenticate("openid")
    body = await json_body()
    _only(body, "credential_id", "code")
    credential_id = _string(body, "credential_id", "the id returned when the setup started")
    code = _string(body, "code", "the 6-digit code the app shows")
    await _count_code_attempt(caller.user.id)
    try:
        codes = await runtime().enrolment.confirm_totp(caller.user.id, credential_id, code)
    except AccountError as exc:
        _invalid(exc)
    return jsonify(recovery_codes=codes)


@blueprint.delete("/mfa/totp")
async def delete_totp() -> Response:
    caller = await authenticate("openid")
    body = await json_body()
    _only(body, "password", "code")
    await _count_code_attempt(caller.user.id)
    await _check_password(caller, body)
    rt = runtime()
    if not await mfa.verify_totp(rt.db, rt.encryptor, caller.user.id, _string(body, "code", "a current code")[:64]):
        raise InvalidField("code", "is not correct or was already used")
    await mfa.disable_totp(rt.db, rt.events, caller.user.id)
    return Response("", status=204)


@blueprint.post("/mfa/recovery-codes")
async def new_recovery_codes() -> Response:
    caller, _body = await _with_password()
    rt = runtime()
    try:
        codes = await mfa.regenerate_recovery_codes(rt.db, rt.passwords, rt.events, caller.user.id)
    except AccountError as exc:
        raise Conflict(exc.message) from None
    return jsonify(recovery_codes=codes)


@blueprint.post("/passkeys/options")
async def passkey_options() -> Response:
    caller, _body = await _with_password()
    try:
        return jsonify(await runtime().enrolment.passkey_options(caller.user, binding=_api_binding(caller)))
    except AccountError as exc:  # the limit of passkeys per account
        _invalid(exc)


@blueprint.post("/passkeys")
async def add_passkey() -> tuple[Response, int]:
    caller = await authenticate("openid")
    body = await json_body()
    _only(body, "ceremony", "credential", "name")
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise InvalidField("credential", "is required (the PublicKeyCredential as JSON)")
    try:
        key = await runtime().enrolment.add_passkey(
            caller.user.id,
            binding=_api_binding(caller),
            ceremony=_string(body, "ceremony", "the id returned with the options"),
            credential=credential,
            name=str(body.get("name") or "Passkey"),
        )
    except AccountError as exc:
        _invalid(exc)
    return jsonify(_passkey_view(key)), 201


@blueprint.patch("/passkeys/<passkey_id>")
async def rename_passkey(passkey_id: str) -> Response:
    caller = await authenticate("openid")
    body = await json_body()
    _only(body, "name")
    try:
        key = await passkeys.rename_passkey(
            runtime().db, runtime().events, caller.user.id, passkey_id[:64], _string(body, "name", "a string")
        )
    except AccountError as exc:
        if exc.field == "passkey":
            raise NotFound(exc.message) from None
        _invalid(exc)
    return jsonify(_passkey_view(key))


@blueprint.delete("/passkeys/<passkey_id>")
async def delete_passkey(passkey_id: str) -> Response:
    caller, _body = await _with_password()
    if not await passkeys.remove_passkey(runtime().db, runtime().events, caller.user.id, passkey_id[:64]):
        raise NotFound("There is no such passkey on this account.")
    return Response("", status=204)


# -- sessions ------------------------------------------------------------------------------------
# Where the user is signed in. The caller's own session is the one its access token was issued in
# (the token's `sid`); ending another logs that browser out at its next request.


@blueprint.get("/sessions")
async def list_sessions() -> Response:
    caller = await authenticate("openid")
    rt = runtime()
    current = caller.claims.get("sid")
    items = await describe_all(
        rt.sessions, rt.db, caller.user.id, current_sid=current if isinstance(current, str) else None
    )
    return jsonify(sessions=items)


async def _reauthenticated(caller: Caller) -> None:
    """ASVS 7.5.2: ending another session needs a fresh authentication: the token's sign-in is at
    most REAUTH_WINDOW old, or the body carries the password. Otherwise RFC 9470's challenge tells
    the app to sign the user in again with max_age."""
    # A body is optional here: an empty DELETE or POST relies on a recent sign-in.
    body = await json_body() if request.content_length or request.mimetype else {}
    _only(body, "password")
    if "password" in body:
        await _check_password(caller, body)
        return
    _require_recent_sign_in(caller, REAUTH_WINDOW)


@blueprint.delete("/sessions/<sid>")
async def end_session(sid: str) -> Response:
    caller = await authenticate("openid")
    own = sid == caller.claims.get("sid")
    if not own:
        await _reauthenticated(caller)
    reason = "logout" if own else "ended_by_user"
    if len(sid) > 64 or not await runtime().sessions.end_by_sid(caller.user.id, sid, reason=reason):
        raise NotFound("There is no such session of this account (it may have ended already).")
    return Response("", status=204)


@blueprint.post("/sessions/end-others")
async def end_other_sessions() -> Response:
    caller = await authenticate("openid")
    await _reauthenticated(caller)
    rt = runtime()
    current = caller.claims.get("sid")
    session = await rt.sessions.by_sid(current) if isinstance(current, str) else None
    if session is None or session.user_id != caller.user.id:
        raise Conflict(
            "The session this access token was issued in has ended, so there is no 'this session' to keep. "
            "End sessions one by one, or sign in again."
        )
    ended = await rt.sessions.end_all_for_user(caller.user.id, keep=session.digest, reason="ended_by_user")
    return jsonify(ended=len(ended))
