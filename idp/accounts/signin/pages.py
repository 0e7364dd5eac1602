"""Signing in (server-rendered): the password form, the second factor after it, passwordless sign-in
with a passkey, and enrolment when policy requires a second factor the user doesn't have yet.

Plain HTML forms with stable names and ids, so any browser automation (including the OpenID
conformance suite's) can drive them; WebAuthn ceremonies are JSON calls from ``static/passkeys.js``,
CSRF-checked through ``X-CSRF-Token``. What each path proved is ``idp.accounts.signin.authn``'s
(``amr``/``acr``). Every second-factor attempt (TOTP, recovery code, passkey assertion) counts
against the ``mfa_per_account`` and ``mfa_per_ip`` limits (NIST SP 800-63B §3.2.2); over them the
answer is 429 with Retry-After.
"""

from __future__ import annotations

from typing import Any

from quart import Response, render_template, request, url_for

from idp.accounts.security import mfa, passkeys
from idp.accounts.security.relying_party import PasskeyError, RelyingParty
from idp.accounts.signin import authn
from idp.accounts.signin.eligibility import DISABLED, can_sign_in
from idp.accounts.signin.password import LoginFailure, sign_in_with_password
from idp.accounts.signin.pending import PENDING_COOKIE, PendingLogin
from idp.accounts.users import AccountError
from idp.accounts.web import (
    account_pages,
    add_passkey,
    continue_sign_in,
    count_second_factor_attempt,
    json_body,
    json_error,
    json_response,
    load_user,
    message,
    mfa_pages,
    page,
    passkey_options,
    recovery_codes_page,
    totp_setup_page,
)
from idp.errors import InvalidRequest
from idp.events import LoginFailed
from idp.http import runtime
from idp.web import (
    clear_cookie,
    client_ip,
    csrf_binding,
    csrf_token,
    current_session,
    device_token,
    enforce_limits,
    let_forms_leave_site,
    local_path,
    read_cookie,
    require_csrf,
    require_csrf_header,
    see_other,
    start_browser_session,
)

_EXPIRED = "Your sign-in has expired. Sign in again."


def _relying_party() -> RelyingParty:
    rt = runtime()
    return RelyingParty.from_settings(rt.settings.issuer, rt.settings.webauthn)


# -- the password ----------------------------------------------------------------------------------


async def _login_page(*, return_to: str, email: str | None, error: str | None, status: int) -> Response:
    let_forms_leave_site(return_to)
    html = await render_template(
        "accounts/login.html",
        csrf_token=csrf_token(),
        return_to=return_to,
        email=email,
        error=error,
        registration_enabled=runtime().settings.accounts.registration_enabled,
    )
    return page(html, status)


@account_pages.get("/login")
async def login() -> Response:
    return_to = local_path(request.args.get("return_to"))
    hint = request.args.get("login_hint")
    session = await current_session()
    email = hint[:320] if hint else None
    if email is None and session is not None:
        user = await load_user(session.user_id)
        email = user.email if user else None
    return await _login_page(return_to=return_to, email=email, error=None, status=200)


@account_pages.post("/login")
async def login_submit() -> Response:
    rt = runtime()
    await require_csrf()
    form = await request.form
    return_to = local_path(form.get("return_to"))
    email = (form.get("email") or "").strip()
    password = form.get("password") or ""
    try:
        checked = await sign_in_with_password(
            rt.accounts.sign_in, email, password, ip=client_ip(), device_token=device_token()
        )
    except LoginFailure as failure:
        code = 401 if failure.retry_after is None else 429
        answer = await _login_page(return_to=return_to, email=email[:320], error=failure.message, status=code)
        if failure.retry_after is not None:
            answer.headers["Retry-After"] = str(max(1, failure.retry_after))
        return answer
    return await continue_sign_in(checked.user, return_to, password=checked)


# -- the pending sign-in (password checked, second factor due) ---------------------------------------


async def _authentication_options(user_id: str | None, binding: str) -> Response:
    rt = runtime()
    ceremony, options = await passkeys.authentication_options(
        rt.db, rt.kv, _relying_party(), user_id=user_id, binding=binding
    )
    return json_response({"ceremony": ceremony, "publicKey": options})


async def _verify_assertion(
    body: dict[str, Any], binding: str, user_id: str | None
) -> passkeys.PasskeyAssertion | Response:
    """Finish an authentication ceremony (counted against the limits); a 401 if it fails."""
    rt = runtime()
    await count_second_factor_attempt(user_id)
    try:
        return await passkeys.authenticate_passkey(
            rt.db,
            rt.kv,
            _relying_party(),
            ceremony_id=str(body.get("ceremony") or ""),
            binding=binding,
            credential=body.get("credential") or {},
        )
    except PasskeyError as exc:
        await rt.events.publish(LoginFailed(reason=exc.reason, user_id=user_id, factor=authn.WEBAUTHN))
        return json_error(401, "passkey_failed", exc.message)


async def _pending() -> PendingLogin | None:
    return await runtime().pending_logins.load(read_cookie(PENDING_COOKIE))


async def _complete(pending: PendingLogin, proved: authn.Authentication, response: Response) -> Response | None:
    """Turn the pending sign-in into a session; None if it was already used or the account can't
    sign in any more."""
    rt = runtime()
    if not await rt.pending_logins.finish(pending):
        return None
    user = await load_user(pending.user_id)
    if user is None or not can_sign_in(user):
        return None
    await start_browser_session(user, proved, response)
    clear_cookie(response, PENDING_COOKIE)
    return response


async def _expired_page() -> Response:
    response = await message("Sign in again", _EXPIRED, link=url_for("accounts.login"), link_text="Sign in", status=400)
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
    return page(html, status)


@mfa_pages.get("/login/mfa")
async def second_factor() -> Response:
    pending = await _pending()
    if pending is None or pending.enrol:
        return see_other(url_for("accounts.login"))
    return await _second_factor_page(pending)


@mfa_pages.post("/login/mfa")
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
    await count_second_factor_attempt(pending.user_id)
    if method == authn.TOTP:
        ok = await mfa.verify_totp(rt.db, rt.encryptor, pending.user_id, code)
    else:
        ok = await mfa.use_recovery_code(rt.db, rt.passwords, rt.events, pending.user_id, code)
    if not ok:
        await rt.events.publish(LoginFailed(reason="invalid_code", user_id=pending.user_id, factor=method))
        wrong = (
            "That code is not correct or was already used. Enter the current code from your app."
            if method == authn.TOTP
            else "That recovery code is not correct or was already used."
        )
        return await _second_factor_page(pending, error=wrong, status=401)
    completed = await _complete(pending, authn.password_and(method), see_other(pending.return_to or "/account"))
    return completed or await _expired_page()


@mfa_pages.post("/login/mfa/passkey/options")
async def second_factor_passkey_options() -> Response:
    await require_csrf_header()
    pending = await _pending()
    if pending is None or pending.enrol:
        return json_error(400, "login_expired", _EXPIRED)
    return await _authentication_options(pending.user_id, pending.digest)


@mfa_pages.post("/login/mfa/passkey")
async def second_factor_passkey() -> Response:
    await require_csrf_header()
    pending = await _pending()
    if pending is None or pending.enrol:
        return json_error(400, "login_expired", _EXPIRED)
    assertion = await _verify_assertion(await json_body(), pending.digest, pending.user_id)
    if isinstance(assertion, Response):
        return assertion
    proved = authn.password_and(authn.WEBAUTHN, backup_eligible=assertion.backup_eligible)
    completed = await _complete(pending, proved, json_response({"redirect": pending.return_to or "/account"}))
    return completed or json_error(400, "login_expired", _EXPIRED)


# -- passwordless: a discoverable passkey that verifies its user ----------------------------------


@mfa_pages.post("/login/passkey/options")
async def passkey_login_options() -> Response:
    await require_csrf_header()
    return await _authentication_options(None, csrf_binding())


@mfa_pages.post("/login/passkey")
async def passkey_login() -> Response:
    rt = runtime()
    await require_csrf_header()
    await enforce_limits({"passkey_login_per_ip": client_ip()}, "passkey sign-in attempts")
    body = await json_body()
    assertion = await _verify_assertion(body, csrf_binding(), None)
    if isinstance(assertion, Response):
        return assertion
    user = await load_user(assertion.user_id)
    if user is None or not can_sign_in(user):
        # One answer, and one audit reason, for every refusal: an unconfirmed address included,
        # which no account with a passkey has (adding one takes a sign-in).
        await rt.events.publish(LoginFailed(reason=DISABLED.reason, user_id=assertion.user_id, factor=authn.WEBAUTHN))
        return json_error(403, "login_refused", DISABLED.message)
    response = json_response({"redirect": local_path(str(body.get("return_to") or ""), "/account")})
    proved = authn.passkey_alone(backup_eligible=assertion.backup_eligible)
    await start_browser_session(user, proved, response)
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
    user = await load_user(pending.user_id)
    if user is None:
        return await _expired_page()
    enrolment = await runtime().enrolment.start_totp(user, retry=retry)
    return await totp_setup_page(enrolment, at_login=True, error=error, status=status)


@mfa_pages.get("/login/setup-mfa")
async def setup_at_login() -> Response:
    pending = await _pending_enrolment()
    if pending is None:
        return see_other(url_for("accounts.login"))
    return await _setup_page(pending)


@mfa_pages.post("/login/setup-mfa/totp")
async def setup_at_login_totp() -> Response:
    rt = runtime()
    await require_csrf()
    pending = await _pending_enrolment()
    if pending is None:
        return await _expired_page()
    form = await request.form
    await count_second_factor_attempt(pending.user_id)
    try:
        codes = await rt.enrolment.confirm_totp(
            pending.user_id, form.get("credential_id") or "", form.get("code") or ""
        )
    except AccountError as exc:
        return await _setup_page(pending, retry=form.get("credential_id"), error=exc.message, status=400)
    pending.enrolled = authn.TOTP
    await rt.pending_logins.save(pending)
    let_forms_leave_site(pending.return_to)  # "Continue" ends the sign-in
    return await recovery_codes_page(codes, continue_action=url_for("mfa.setup_at_login_done"))


@mfa_pages.post("/login/setup-mfa/done")
async def setup_at_login_done() -> Response:
    await require_csrf()
    pending = await _pending_enrolment()
    if pending is None or pending.enrolled is None:
        return await _expired_page()
    completed = await _complete(
        pending, authn.password_and(pending.enrolled), see_other(pending.return_to or "/account")
    )
    return completed or await _expired_page()


@mfa_pages.post("/login/setup-mfa/passkey/options")
async def setup_at_login_passkey_options() -> Response:
    await require_csrf_header()
    pending = await _pending_enrolment()
    user = await load_user(pending.user_id) if pending is not None else None
    if pending is None or user is None:
        return json_error(400, "login_expired", _EXPIRED)
    return await passkey_options(user, pending.digest)


@mfa_pages.post("/login/setup-mfa/passkey")
async def setup_at_login_passkey() -> Response:
    await require_csrf_header()
    pending = await _pending_enrolment()
    if pending is None:
        return json_error(400, "login_expired", _EXPIRED)
    registered = await add_passkey(pending.user_id, pending.digest)
    if isinstance(registered, Response):
        return registered
    # Creating the passkey proved possession of it, as a confirmed TOTP code does.
    proved = authn.password_and(authn.WEBAUTHN, backup_eligible=registered.backup_eligible)
    completed = await _complete(pending, proved, json_response({"redirect": pending.return_to or "/account"}))
    return completed or json_error(400, "login_expired", _EXPIRED)
