"""The account's security page: the authenticator app (TOTP), recovery codes and passkeys.

Changes need the password again (ASVS 7.5.1), checked as a sign-in attempt
(idp.accounts.web.reauthenticate), and removing TOTP a current code as well; code attempts count
against the ``mfa_per_account`` and ``mfa_per_ip`` limits. After a change to how the account signs
in, the session gets a new cookie (ASVS 7.2.4), and removing a factor offers to end the other
sessions (ASVS 7.4.3). The passkey ceremonies are JSON calls from ``static/passkeys.js``,
CSRF-checked through ``X-CSRF-Token``.
"""

from __future__ import annotations

from typing import Any

from quart import Response, render_template, request, url_for

from idp.accounts.security import mfa, passkeys
from idp.accounts.sessions.store import BrowserSession
from idp.accounts.users import AccountError
from idp.accounts.web import (
    add_passkey,
    count_second_factor_attempt,
    json_body,
    json_error,
    json_response,
    load_user,
    mfa_pages,
    notice,
    page,
    passkey_options,
    reauthenticate,
    recovery_codes_page,
    totp_setup_page,
)
from idp.http import runtime
from idp.web import csrf_token, current_session, require_csrf, require_csrf_header, rotate_browser_session, see_other

_NOTICES = {
    "totp-on": "Your authenticator app is set up.",
    "totp-off": "The authenticator app was removed.",
    "passkey-added": "The passkey was added.",
    "passkey-renamed": "The passkey was renamed.",
    "passkey-removed": "The passkey was removed.",
    "admin-needs-mfa": "Administrators need a second factor: set one up here, then sign in again with it "
    "to open the admin pages.",
}


async def _security_page(user_id: str, *, error: str | None = None, status: int = 200) -> Response:
    rt = runtime()
    user = await load_user(user_id)
    if user is None:
        return see_other("/login?return_to=/account/security")
    html = await render_template(
        "accounts/security.html",
        csrf_token=csrf_token(),
        factors=await mfa.factor_status(rt.db, user_id),
        passkeys=await passkeys.list_passkeys(rt.db, user_id),
        required=mfa.mfa_required(rt.settings.mfa.required, user),
        notice=notice(_NOTICES),
        error=error,
    )
    return page(html, status)


async def _security_form() -> tuple[BrowserSession, Any] | Response:
    """The signed-in session and the CSRF-checked form of a security-page post, or the redirect
    to sign in."""
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/security")
    await require_csrf()
    return session, await request.form


@mfa_pages.get("/account/security")
async def security() -> Response:
    session = await current_session()
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


@mfa_pages.post("/account/security/totp")
async def security_totp_start() -> Response:
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    try:
        await reauthenticate(session.user_id, form.get("password") or "")
        user = await load_user(session.user_id)
        assert user is not None
        enrolment = await runtime().enrolment.start_totp(user)
    except AccountError as exc:
        return await _security_page(session.user_id, error=exc.message, status=400)
    return await totp_setup_page(enrolment)


@mfa_pages.post("/account/security/totp/confirm")
async def security_totp_confirm() -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    await count_second_factor_attempt(session.user_id)
    try:
        codes = await rt.enrolment.confirm_totp(
            session.user_id, form.get("credential_id") or "", form.get("code") or ""
        )
    except AccountError as exc:
        user = await load_user(session.user_id)
        if exc.field != "code" or user is None:
            return await _security_page(session.user_id, error=exc.message, status=400)
        # The same secret again: the entry the user just made in the app stays valid.
        enrolment = await rt.enrolment.start_totp(user, retry=form.get("credential_id"))
        return await totp_setup_page(enrolment, error=exc.message, status=400)
    return await _rotated(await recovery_codes_page(codes))


@mfa_pages.post("/account/security/totp/disable")
async def security_totp_disable() -> Response:
    rt = runtime()
    signed_in = await _security_form()
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    await count_second_factor_attempt(session.user_id)
    try:
        await reauthenticate(session.user_id, form.get("password") or "")
        if not await mfa.verify_totp(rt.db, rt.encryptor, session.user_id, (form.get("code") or "")[:64]):
            raise AccountError("code", "That code is not correct or was already used.")
    except AccountError as exc:
        return await _security_page(session.user_id, error=exc.message, status=400)
    await mfa.disable_totp(rt.db, rt.events, session.user_id)
    await _end_other_sessions_if_asked(form, session.user_id, session.digest)
    return await _rotated(see_other(url_for("mfa.security", notice="totp-off")))


@mfa_pages.post("/account/security/recovery-codes")
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
    return await recovery_codes_page(codes)


@mfa_pages.post("/account/security/passkeys/options")
async def security_passkey_options() -> Response:
    session = await current_session()
    if session is None:
        return json_error(401, "login_required", "Sign in again.")
    await require_csrf_header()
    body = await json_body()
    try:
        await reauthenticate(session.user_id, str(body.get("password") or ""))
    except AccountError as exc:
        return json_error(400, "invalid_request", exc.message)
    user = await load_user(session.user_id)
    if user is None:
        return json_error(401, "login_required", "Sign in again.")
    return await passkey_options(user, session.digest)


@mfa_pages.post("/account/security/passkeys")
async def security_passkey_register() -> Response:
    session = await current_session()
    if session is None:
        return json_error(401, "login_required", "Sign in again.")
    await require_csrf_header()
    registered = await add_passkey(session.user_id, session.digest)
    if isinstance(registered, Response):
        return registered
    return await _rotated(
        json_response({"id": registered.id, "redirect": url_for("mfa.security", notice="passkey-added")}, 201)
    )


@mfa_pages.post("/account/security/passkeys/<passkey_id>/rename")
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


@mfa_pages.post("/account/security/passkeys/<passkey_id>/remove")
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
