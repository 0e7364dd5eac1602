"""Second factors in the browser: the sign-in step after the password, passwordless sign-in with
a passkey, enrolment when policy requires a second factor, and the account's security page.

The domain work is in ``idp.accounts.security.mfa`` (TOTP, recovery codes) and ``idp.accounts.security.passkeys``
(WebAuthn); ``idp.accounts.signin.authn`` says what each path proved (``amr``/``acr``). WebAuthn
ceremonies are JSON calls from ``static/passkeys.js``, CSRF-checked through ``X-CSRF-Token``.

Every second-factor attempt (TOTP, recovery code, passkey assertion) counts against the
``mfa_per_account`` and ``mfa_per_ip`` limits (NIST SP 800-63B §3.2.2); over them the answer is 429
with Retry-After. Changes to the factors need the password again (ASVS 7.5.1), checked as a
sign-in attempt (idp.web.reauthenticate), and disabling TOTP a current code as well.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, jsonify, render_template, request, url_for

from idp.accounts.api import json_body
from idp.accounts.security import mfa, passkeys
from idp.accounts.sessions.store import BrowserSession
from idp.accounts.signin import authn
from idp.accounts.signin.pending import PENDING_COOKIE, PendingLogin
from idp.accounts.users import AccountError
from idp.errors import InvalidRequest, TooManyRequests
from idp.events import LoginFailed
from idp.http import runtime
from idp.runtime import Runtime
from idp.security.ratelimit import RateLimited
from idp.storage.models import User
from idp.storage.repositories import UserRepository
from idp.web import (
    clear_cookie,
    client_ip,
    csrf_binding,
    csrf_token,
    current_session,
    enforce_limits,
    let_forms_leave_site,
    read_cookie,
    reauthenticate,
    require_csrf,
    require_csrf_header,
    rotate_browser_session,
    see_other,
    set_cookie,
    start_browser_session,
)

blueprint = Blueprint("mfa", __name__)

_EXPIRED = "Your sign-in has expired. Sign in again."


def _page(html: str, status: int = 200) -> Response:
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(data: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(data)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _json_error(status: int, error: str, description: str) -> Response:
    return _json({"error": error, "error_description": description}, status)


async def _user(rt: Runtime, user_id: str) -> User | None:
    async with rt.db.session() as db_session:
        return await UserRepository(db_session).get(user_id)


def _client_ip() -> str:
    return request.remote_addr or "unknown"


async def _count_attempt(user_id: str | None) -> None:
    """One second-factor attempt against the per-account and per-IP limits."""
    try:
        await runtime().limits.hit_all({"mfa_per_account": user_id, "mfa_per_ip": _client_ip()})
    except RateLimited as exc:
        await runtime().events.publish(LoginFailed(reason="rate_limited", user_id=user_id, factor="second_factor"))
        minutes = max(1, round(exc.retry_after / 60))
        raise TooManyRequests(
            exc.retry_after, f"Too many attempts. Wait {minutes} minute(s) before trying again."
        ) from None


def relying_party(rt: Runtime) -> passkeys.RelyingParty:
    return passkeys.relying_party(rt.settings.issuer, rt.settings.webauthn)


async def _registration_options(rt: Runtime, user: User, binding: str) -> Response:
    ceremony, options = await passkeys.registration_options(
        rt.db,
        rt.kv,
        relying_party(rt),
        user_id=user.id,
        user_name=user.email,
        display_name=user.name or user.email,
        binding=binding,
    )
    return _json({"ceremony": ceremony, "publicKey": options})


async def _register(rt: Runtime, user_id: str, binding: str) -> passkeys.Passkey | Response:
    """Finish a registration ceremony from the request body; an error response if it fails."""
    body = await json_body()
    try:
        return await passkeys.register_passkey(
            rt.db,
            rt.kv,
            rt.events,
            relying_party(rt),
            user_id=user_id,
            ceremony_id=str(body.get("ceremony") or ""),
            binding=binding,
            credential=body.get("credential") or {},
            name=str(body.get("name") or "Passkey"),
        )
    except AccountError as exc:
        return _json_error(400, "passkey_failed", exc.message)


async def _authentication_options(rt: Runtime, user_id: str | None, binding: str) -> Response:
    ceremony, options = await passkeys.authentication_options(
        rt.db, rt.kv, relying_party(rt), user_id=user_id, binding=binding
    )
    return _json({"ceremony": ceremony, "publicKey": options})


async def _verify_assertion(
    rt: Runtime, body: dict[str, Any], binding: str, user_id: str | None
) -> passkeys.PasskeyAssertion | Response:
    """Finish an authentication ceremony (counted against the limits); a 401 if it fails."""
    await _count_attempt(user_id)
    try:
        return await passkeys.authenticate_passkey(
            rt.db,
            rt.kv,
            relying_party(rt),
            ceremony_id=str(body.get("ceremony") or ""),
            binding=binding,
            credential=body.get("credential") or {},
        )
    except passkeys.PasskeyError as exc:
        await rt.events.publish(LoginFailed(reason=exc.reason, user_id=user_id, factor=authn.WEBAUTHN))
        return _json_error(401, "passkey_failed", exc.message)


def _totp_issuer(rt: Runtime) -> str:
    return mfa.totp_issuer_name(rt.settings.issuer, rt.settings.mfa.totp_issuer)


async def _enrolment(rt: Runtime, user: User, retry: str | None) -> mfa.TotpEnrolment:
    """The unconfirmed setup ``retry`` if it still exists, else a new one."""
    issuer_name = _totp_issuer(rt)
    if retry:
        found = await mfa.pending_totp_enrolment(
            rt.db, rt.encryptor, user.id, retry, issuer_name=issuer_name, account_name=user.email
        )
        if found is not None:
            return found
    return await mfa.start_totp_enrolment(
        rt.db, rt.encryptor, user.id, issuer_name=issuer_name, account_name=user.email
    )


# -- the pending sign-in (password checked, second factor due) ---------------------------------------


async def start_second_step(user_id: str, return_to: str, *, enrol: bool) -> Response:
    """After a correct password: remember the sign-in and ask for the second factor (or, when
    ``enrol``, for setting one up)."""
    rt = runtime()
    cookie, _pending = await rt.pending_logins.start(user_id, return_to, enrol=enrol)
    response = see_other(url_for("mfa.setup_at_login") if enrol else url_for("mfa.second_factor"))
    set_cookie(response, PENDING_COOKIE, cookie, max_age=rt.pending_logins.ttl)
    return response


async def _pending() -> PendingLogin | None:
    return await runtime().pending_logins.load(read_cookie(PENDING_COOKIE))


async def _complete(pending: PendingLogin, proved: authn.Authentication, response: Response) -> Response | None:
    """Turn the pending sign-in into a session; None if it was already used or the account can't
    sign in any more."""
    rt = runtime()
    if not await rt.pending_logins.finish(pending):
        return None
    user = await _user(rt, pending.user_id)
    if user is None or user.disabled:
        return None
    await start_browser_session(pending.user_id, proved.amr, proved.acr, response)
    clear_cookie(response, PENDING_COOKIE)
    return response


async def _expired_page() -> Response:
    html = await render_template(
        "accounts/message.html",
        title="Sign in again",
        text=_EXPIRED,
        link=url_for("accounts.login"),
        link_text="Sign in",
    )
    response = _page(html, 400)
    clear_cookie(response, PENDING_COOKIE)
    return response


async def _second_factor_page(pending: PendingLogin, *, error: str | None = None, status: int = 200) -> Response:
    rt = runtime()
    factors = await mfa.factor_status(rt.db, pending.user_id)
    let_forms_leave_site(pending.return_to)
    html = await render_template(
        "accounts/mfa_login.html",
        csrf_token=csrf_token(),
        factors=factors,
        method=request.args.get("method", ""),
        error=error,
    )
    return _page(html, status)


@blueprint.get("/login/mfa")
async def second_factor() -> Response:
    pending = await _pending()
    if pending is None or pending.enrol:
        return see_other(url_for("accounts.login"))
    return await _second_factor_page(pending)


@blueprint.post("/login/mfa")
async def second_factor_submit() -> Response:
    rt = runtime()
    await require_csrf()
    pending = await _pending()
    if pending is None or pending.enrol:
        return await _expired_page()
    form = await request.form
    method = form.get("method")
    code = (form.get("code") or "")[:64]
    if method not in (authn.TOTP, authn.RECOVERY_CODE):
        raise InvalidRequest("Choose how to confirm your sign-in: an authenticator app code or a recovery code.")
    await _count_attempt(pending.user_id)
    if method == authn.TOTP:
        ok = await mfa.verify_totp(rt.db, rt.encryptor, pending.user_id, code)
    else:
        ok = await mfa.use_recovery_code(rt.db, rt.passwords, rt.events, pending.user_id, code)
    if not ok:
        await rt.events.publish(LoginFailed(reason="invalid_code", user_id=pending.user_id, factor=method))
        message = (
            "That code is not correct or was already used. Enter the current code from your app."
            if method == authn.TOTP
            else "That recovery code is not correct or was already used."
        )
        return await _second_factor_page(pending, error=message, status=401)
    completed = await _complete(pending, authn.password_and(method), see_other(pending.return_to or "/account"))
    return completed or await _expired_page()


@blueprint.post("/login/mfa/passkey/options")
async def second_factor_passkey_options() -> Response:
    await require_csrf_header()
    pending = await _pending()
    if pending is None or pending.enrol:
        return _json_error(400, "login_expired", _EXPIRED)
    return await _authentication_options(runtime(), pending.user_id, pending.digest)


@blueprint.post("/login/mfa/passkey")
async def second_factor_passkey() -> Response:
    rt = runtime()
    await require_csrf_header()
    pending = await _pending()
    if pending is None or pending.enrol:
        return _json_error(400, "login_expired", _EXPIRED)
    assertion = await _verify_assertion(rt, await json_body(), pending.digest, pending.user_id)
    if isinstance(assertion, Response):
        return assertion
    proved = authn.password_and(authn.WEBAUTHN, backup_eligible=assertion.backup_eligible)
    completed = await _complete(pending, proved, _json({"redirect": pending.return_to or "/account"}))
    return completed or _json_error(400, "login_expired", _EXPIRED)


# -- passwordless: a discoverable passkey that verifies its user ----------------------------------


@blueprint.post("/login/passkey/options")
async def passkey_login_options() -> Response:
    await require_csrf_header()
    return await _authentication_options(runtime(), None, csrf_binding())


@blueprint.post("/login/passkey")
async def passkey_login() -> Response:
    from idp.web import local_path

    rt = runtime()
    await require_csrf_header()
    await enforce_limits({"passkey_login_per_ip": client_ip()}, "passkey sign-in attempts")
    body = await json_body()
    assertion = await _verify_assertion(rt, body, csrf_binding(), None)
    if isinstance(assertion, Response):
        return assertion
    user = await _user(rt, assertion.user_id)
    if user is None or user.disabled or not user.email_verified:
        await rt.events.publish(LoginFailed(reason="disabled", user_id=assertion.user_id, factor=authn.WEBAUTHN))
        return _json_error(403, "login_refused", "This account cannot sign in. Contact the administrator.")
    response = _json({"redirect": local_path(str(body.get("return_to") or ""), "/account")})
    proved = authn.passkey_alone(backup_eligible=assertion.backup_eligible)
    await start_browser_session(user.id, proved.amr, proved.acr, response)
    return response


# -- enrolment during sign-in (policy requires a second factor the user doesn't have yet) ---------


async def _pending_enrolment() -> PendingLogin | None:
    pending = await _pending()
    return pending if pending is not None and pending.enrol else None


async def _setup_page(
    pending: PendingLogin, *, retry: str | None = None, error: str | None = None, status: int = 200
) -> Response:
    """The enrolment page; ``retry`` is the credential id of the setup being confirmed, shown again
    after a wrong code so the entry already made in the app stays valid."""
    rt = runtime()
    user = await _user(rt, pending.user_id)
    if user is None:
        return await _expired_page()
    return await _totp_form(await _enrolment(rt, user, retry), at_login=True, error=error, status=status)


@blueprint.get("/login/setup-mfa")
async def setup_at_login() -> Response:
    pending = await _pending_enrolment()
    if pending is None:
        return see_other(url_for("accounts.login"))
    return await _setup_page(pending)


@blueprint.post("/login/setup-mfa/totp")
async def setup_at_login_totp() -> Response:
    rt = runtime()
    await require_csrf()
    pending = await _pending_enrolment()
    if pending is None:
        return await _expired_page()
    form = await request.form
    await _count_attempt(pending.user_id)
    try:
        codes = await mfa.confirm_totp_enrolment(
            rt.db,
            rt.encryptor,
            rt.events,
            pending.user_id,
            form.get("credential_id") or "",
            (form.get("code") or "")[:64],
            hasher=rt.passwords,
        )
    except AccountError as exc:
        return await _setup_page(pending, retry=form.get("credential_id"), error=exc.message, status=400)
    pending.enrolled = authn.TOTP
    await rt.pending_logins.save(pending)
    let_forms_leave_site(pending.return_to)  # "Continue" ends the sign-in
    return await _recovery_codes_page(codes, continue_action=url_for("mfa.setup_at_login_done"))


@blueprint.post("/login/setup-mfa/done")
async def setup_at_login_done() -> Response:
    await require_csrf()
    pending = await _pending_enrolment()
    if pending is None or pending.enrolled is None:
        return await _expired_page()
    completed = await _complete(
        pending, authn.password_and(pending.enrolled), see_other(pending.return_to or "/account")
    )
    return completed or await _expired_page()


@blueprint.post("/login/setup-mfa/passkey/options")
async def setup_at_login_passkey_options() -> Response:
    rt = runtime()
    await require_csrf_header()
    pending = await _pending_enrolment()
    user = await _user(rt, pending.user_id) if pending is not None else None
    if pending is None or user is None:
        return _json_error(400, "login_expired", _EXPIRED)
    return await _registration_options(rt, user, pending.digest)


@blueprint.post("/login/setup-mfa/passkey")
async def setup_at_login_passkey() -> Response:
    rt = runtime()
    await require_csrf_header()
    pending = await _pending_enrolment()
    if pending is None:
        return _json_error(400, "login_expired", _EXPIRED)
    registered = await _register(rt, pending.user_id, pending.digest)
    if isinstance(registered, Response):
        return registered
    # Creating the passkey proved possession of it, as a confirmed TOTP code does.
    proved = authn.password_and(authn.WEBAUTHN, backup_eligible=registered.backup_eligible)
    completed = await _complete(pending, proved, _json({"redirect": pending.return_to or "/account"}))
    return completed or _json_error(400, "login_expired", _EXPIRED)


async def _recovery_codes_page(codes: list[str], *, continue_action: str | None = None) -> Response:
    html = await render_template(
        "accounts/recovery_codes.html", codes=codes, csrf_token=csrf_token(), continue_action=continue_action
    )
    return _page(html)


# -- the account's security page -------------------------------------------------------------------


_NOTICES = {
    "totp-on": "Your authenticator app is set up.",
    "totp-off": "The authenticator app was removed.",
    "passkey-added": "The passkey was added.",
    "passkey-renamed": "The passkey was renamed.",
    "passkey-removed": "The passkey was removed.",
}


async def _security_page(user_id: str, *, error: str | None = None, status: int = 200) -> Response:
    rt = runtime()
    user = await _user(rt, user_id)
    if user is None:
        return see_other("/login?return_to=/account/security")
    html = await render_template(
        "accounts/security.html",
        csrf_token=csrf_token(),
        factors=await mfa.factor_status(rt.db, user_id),
        passkeys=await passkeys.list_passkeys(rt.db, user_id),
        required=mfa.mfa_required(rt.settings.mfa.required, user),
        notice=_NOTICES.get(request.args.get("notice", "")),
        error=error,
    )
    return _page(html, status)


async def _signed_in() -> BrowserSession | None:
    return await current_session()


async def _security_form() -> tuple[BrowserSession, Any] | Response:
    """The signed-in session and the CSRF-checked form of a security-page post, or the redirect
    to sign in."""
    session = await _signed_in()
    if session is None:
        return see_other("/login?return_to=/account/security")
    await require_csrf()
    return session, await request.form


@blueprint.get("/account/security")
async def security() -> Response:
    session = await _signed_in()
    if session is None:
        return see_other("/login?return_to=/account/security")
    return await _security_page(session.user_id)


async def _rotated(response: Response) -> Response:
    """After a change to how the account signs in, the session gets a new cookie (ASVS 7.2.4)."""
    await rotate_browser_session(response)
    return response


async def _end_other_sessions_if_asked(form: Any, user_id: str, keep: str) -> None:
    # ASVS 7.4.3: after removing a factor, offer to sign out everywhere else.
    if form.get("end_other_sessions") == "yes":
        await runtime().sessions.end_all_for_user(user_id, keep=keep, reason="mfa_changed")


@blueprint.post("/account/security/totp")
async def security_totp_start() -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    try:
        await reauthenticate(session.user_id, form.get("password") or "")
        user = await _user(rt, session.user_id)
        assert user is not None
        enrolment = await mfa.start_totp_enrolment(
            rt.db, rt.encryptor, user.id, issuer_name=_totp_issuer(rt), account_name=user.email
        )
    except AccountError as exc:
        return await _security_page(session.user_id, error=exc.message, status=400)
    return await _totp_form(enrolment)


async def _totp_form(
    enrolment: mfa.TotpEnrolment, *, at_login: bool = False, error: str | None = None, status: int = 200
) -> Response:
    """The QR code, the key and the confirmation form; during sign-in also the passkey option."""
    html = await render_template(
        "accounts/mfa_setup.html",
        csrf_token=csrf_token(),
        enrolment=enrolment,
        qr=mfa.qr_code(enrolment.provisioning_uri),
        confirm_action=url_for("mfa.setup_at_login_totp" if at_login else "mfa.security_totp_confirm"),
        at_login=at_login,
        error=error,
    )
    return _page(html, status)


@blueprint.post("/account/security/totp/confirm")
async def security_totp_confirm() -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    await _count_attempt(session.user_id)
    try:
        codes = await mfa.confirm_totp_enrolment(
            rt.db,
            rt.encryptor,
            rt.events,
            session.user_id,
            form.get("credential_id") or "",
            (form.get("code") or "")[:64],
            hasher=rt.passwords,
        )
    except AccountError as exc:
        user = await _user(rt, session.user_id)
        if exc.field != "code" or user is None:
            return await _security_page(session.user_id, error=exc.message, status=400)
        # The same secret again: the entry the user just made in the app stays valid.
        enrolment = await _enrolment(rt, user, form.get("credential_id"))
        return await _totp_form(enrolment, error=exc.message, status=400)
    return await _rotated(await _recovery_codes_page(codes))


@blueprint.post("/account/security/totp/disable")
async def security_totp_disable() -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    await _count_attempt(session.user_id)
    try:
        await reauthenticate(session.user_id, form.get("password") or "")
        if not await mfa.verify_totp(rt.db, rt.encryptor, session.user_id, (form.get("code") or "")[:64]):
            raise AccountError("code", "That code is not correct or was already used.")
    except AccountError as exc:
        return await _security_page(session.user_id, error=exc.message, status=400)
    await mfa.disable_totp(rt.db, rt.events, session.user_id)
    await _end_other_sessions_if_asked(form, session.user_id, session.digest)
    return await _rotated(see_other(url_for("mfa.security", notice="totp-off")))


@blueprint.post("/account/security/recovery-codes")
async def security_recovery_codes() -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    try:
        await reauthenticate(session.user_id, form.get("password") or "")
        codes = await mfa.regenerate_recovery_codes(rt.db, rt.passwords, rt.events, session.user_id)
    except AccountError as exc:
        return await _security_page(session.user_id, error=exc.message, status=400)
    return await _recovery_codes_page(codes)


@blueprint.post("/account/security/passkeys/options")
async def security_passkey_options() -> Response:
    rt = runtime()
    session = await _signed_in()
    if session is None:
        return _json_error(401, "login_required", "Sign in again.")
    await require_csrf_header()
    body = await json_body()
    try:
        await reauthenticate(session.user_id, str(body.get("password") or ""))
    except AccountError as exc:
        return _json_error(400, "invalid_request", exc.message)
    user = await _user(rt, session.user_id)
    if user is None:
        return _json_error(401, "login_required", "Sign in again.")
    return await _registration_options(rt, user, session.digest)


@blueprint.post("/account/security/passkeys")
async def security_passkey_register() -> Response:
    rt = runtime()
    session = await _signed_in()
    if session is None:
        return _json_error(401, "login_required", "Sign in again.")
    await require_csrf_header()
    registered = await _register(rt, session.user_id, session.digest)
    if isinstance(registered, Response):
        return registered
    return await _rotated(
        _json({"id": registered.id, "redirect": url_for("mfa.security", notice="passkey-added")}, 201)
    )


@blueprint.post("/account/security/passkeys/<passkey_id>/rename")
async def security_passkey_rename(passkey_id: str) -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    try:
        await passkeys.rename_passkey(rt.db, rt.events, session.user_id, passkey_id, form.get("name") or "")
    except AccountError as exc:
        return await _security_page(session.user_id, error=exc.message, status=400)
    return see_other(url_for("mfa.security", notice="passkey-renamed"))


@blueprint.post("/account/security/passkeys/<passkey_id>/remove")
async def security_passkey_remove(passkey_id: str) -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    try:
        await reauthenticate(session.user_id, form.get("password") or "")
    except AccountError as exc:
        return await _security_page(session.user_id, error=exc.message, status=400)
    if not await passkeys.remove_passkey(rt.db, rt.events, session.user_id, passkey_id):
        return await _security_page(session.user_id, error="There is no such passkey on your account.", status=404)
    await _end_other_sessions_if_asked(form, session.user_id, session.digest)
    return await _rotated(see_other(url_for("mfa.security", notice="passkey-removed")))
