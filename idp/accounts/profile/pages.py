"""Account pages (server-rendered): sign-in. Plain HTML forms with stable names and ids, so any
browser automation (including the OpenID conformance suite's) can drive them."""

from __future__ import annotations

from quart import Blueprint, Response, render_template, request, url_for

from idp.accounts.security import mfa
from idp.accounts.signin import authn
from idp.accounts.signin import pages as mfa_routes
from idp.accounts.signin.password import LoginFailure, PasswordCheckRefused, sign_in_with_password
from idp.http import runtime
from idp.web import (
    SESSION_COOKIE,
    clear_cookie,
    client_ip,
    csrf_binding,
    csrf_token,
    current_session,
    device_token,
    enforce_limits,
    let_forms_leave_site,
    local_path,
    require_csrf,
    rotate_browser_session,
    see_other,
    start_browser_session,
    too_many_attempts,
    validates_own_form_text,
)

blueprint = Blueprint("accounts", __name__)


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
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/login")
async def login() -> Response:
    return_to = local_path(request.args.get("return_to"))
    hint = request.args.get("login_hint")
    session = await current_session()
    email = hint[:320] if hint else None
    if email is None and session is not None:
        async with runtime().db.session() as db_session:
            from idp.storage.repositories import UserRepository

            user = await UserRepository(db_session).get(session.user_id)
            email = user.email if user else None
    return await _login_page(return_to=return_to, email=email, error=None, status=200)


@blueprint.post("/login")
async def login_submit() -> Response:
    rt = runtime()
    await require_csrf()
    form = await request.form
    return_to = local_path(form.get("return_to"))
    email = (form.get("email") or "").strip()
    password = form.get("password") or ""
    try:
        user = await sign_in_with_password(
            rt.accounts.sign_in, email, password, ip=client_ip(), device_token=device_token()
        )
    except LoginFailure as failure:
        code = 401 if failure.retry_after is None else 429
        page = await _login_page(return_to=return_to, email=email[:320], error=failure.message, status=code)
        if failure.retry_after is not None:
            page.headers["Retry-After"] = str(max(1, failure.retry_after))
        return page
    status = await mfa.factor_status(rt.db, user.id)
    if status.any or mfa.mfa_required(rt.settings.mfa.required, user):
        # The password was right; the second factor (or, when policy requires one and there is
        # none yet, its enrolment) comes next. No session exists until then.
        return await mfa_routes.start_second_step(user.id, return_to, enrol=not status.any)
    response = see_other(return_to)
    # ASVS 7.2.4: a new session id at every sign-in; the old session ends.
    signed_in = authn.password_only()
    await start_browser_session(user.id, signed_in.amr, signed_in.acr, response)
    return response


@blueprint.get("/account/apps")
async def connected_apps() -> Response:
    """Applications the user has allowed, with what they may access (ASVS 10.7.3)."""
    from idp.accounts.apps import consents

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/apps")
    html = await render_template(
        "accounts/apps.html",
        apps=await consents.list_for_user(runtime().db, session.user_id),
        csrf_token=csrf_token(),
        withdrawn=request.args.get("withdrawn"),
    )
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/account/apps/<client_id>/withdraw")
async def withdraw_app(client_id: str) -> Response:
    """Withdraw consent: the app must ask again, and its tokens for this user stop working."""
    from idp.accounts.apps import consents
    from idp.errors import NotFound

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/apps")
    await require_csrf()
    rt = runtime()
    if not await consents.withdraw_and_announce(rt.db, rt.events, session.user_id, client_id):
        raise NotFound("This application has no access to withdraw.")
    return see_other("/account/apps?withdrawn=1")


# -- account pages ----------------------------------------------------------------------------


def _return_to(target: str | None, default: str = "") -> str:
    """A same-origin path to continue at, or ``default`` (local_path refuses control characters)."""
    return local_path(target, default)


def _echo(value: str, limit: int) -> str:
    """A submitted value to show back in the form, without control characters."""
    return "".join(char for char in value[:limit] if ord(char) >= 0x20 and ord(char) != 0x7F)


def _page(html: str, status: int = 200) -> Response:
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


async def _form_page(
    *, title: str, text: str, action: str, hidden: dict[str, str], ask_email: bool, submit: str
) -> Response:
    """A one-button form (confirm a link, or ask for an email address), CSRF-protected."""
    html = await render_template(
        "accounts/email_form.html",
        title=title,
        text=text,
        action=action,
        csrf_token=csrf_token(),
        hidden=hidden,
        ask_email=ask_email,
        submit=submit,
    )
    return _page(html)


async def _message(
    title: str, text: str, *, link: str | None = None, link_text: str = "", status: int = 200
) -> Response:
    return _page(
        await render_template("accounts/message.html", title=title, text=text, link=link, link_text=link_text),
        status,
    )


@blueprint.get("/")
async def home() -> Response:
    return see_other("/account")


@blueprint.get("/account")
async def account_home() -> Response:
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account")
    from idp.storage.repositories import UserRepository

    async with runtime().db.session() as db_session:
        user = await UserRepository(db_session).get(session.user_id)
    html = await render_template("accounts/home.html", user=user, csrf_token=csrf_token())
    return _page(html)


@blueprint.get("/account/password-policy")
async def password_policy() -> Response:
    """The password rules as JSON, so forms (and the demo SPA) validate the same rules client-side."""
    from quart import jsonify

    response = jsonify(runtime().accounts.policy.describe())
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


async def _register_page(
    *,
    return_to: str,
    email: str | None = None,
    name: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    html = await render_template(
        "accounts/register.html",
        csrf_token=csrf_token(),
        return_to=return_to,
        email=email,
        name=name,
        errors=errors or {},
        policy=runtime().settings.password_policy,
    )
    return _page(html, status)


async def _registration_enabled() -> None:
    from idp.errors import NotFound

    if not runtime().settings.accounts.registration_enabled:
        raise NotFound("Self-service registration is not available. Ask your administrator for an account.")


@blueprint.get("/register")
async def register() -> Response:
    await _registration_enabled()
    return await _register_page(return_to=_return_to(request.args.get("return_to")))


@blueprint.post("/register")
@validates_own_form_text
async def register_submit() -> Response:
    from quart import current_app

    from idp.accounts.context import deferred_mail, in_background
    from idp.accounts.registration import signup
    from idp.accounts.users import AccountError

    await _registration_enabled()
    await require_csrf()
    await enforce_limits({"registration_per_ip": client_ip()}, "sign-ups from your network")
    form = await request.form
    # No return_to means "the account page" after verification (not "/", which only redirects there).
    return_to = _return_to(form.get("return_to"))
    email = (form.get("email") or "").strip()
    name = (form.get("name") or "").strip()
    password = form.get("password") or ""
    errors: dict[str, str] = {}
    if not email:
        errors["email"] = "Enter your email address."
    if not password:
        errors["password"] = "Choose a password."  # noqa: S105 - a form message
    if len(name) > 200:
        errors["name"] = "The name may be at most 200 characters."
    if not errors:
        try:
            # Mail goes out after the answer: only a fresh address gets a verification link and
            # only a taken one a notice, and the SMTP time must not tell them apart (ASVS 6.3.8).
            with deferred_mail() as outbox:
                await signup.register(
                    runtime().accounts,
                    email=email,
                    password=password,
                    name=name or None,
                    return_to=return_to or None,
                    browser_binding=csrf_binding(),
                )
        except AccountError as exc:
            errors[exc.field] = exc.message
        else:
            current_app.add_background_task(in_background, runtime().accounts.deliver(*outbox))
    if errors:
        return await _register_page(
            return_to=return_to, email=_echo(email, 320), name=_echo(name, 200), errors=errors, status=400
        )
    return await _message(
        "Check your email",
        "We sent a link to confirm your address. Open it to finish creating your account. "
        "If you don't see it within a few minutes, look in your spam folder or ask for a new link.",
        link=(
            url_for("accounts.resend_verification", return_to=return_to)
            if return_to
            else url_for("accounts.resend_verification")
        ),
        link_text="Send the link again",
    )


@blueprint.get("/verify-email")
async def verify_email() -> Response:
    from idp.accounts import links

    token = request.args.get("token") or ""
    # Opening the link only shows a button: mail scanners prefetch links, and a GET must not
    # use up a single-use token.
    if await links.peek(runtime().db, links.VERIFY_EMAIL, token) is None:
        return await _invalid_verification_link()
    return await _form_page(
        title="Confirm your email address",
        text="Confirm that this address is yours to activate your account.",
        action=url_for("accounts.verify_email_submit"),
        hidden={"token": token},
        ask_email=False,
        submit="Confirm",
    )


async def _invalid_verification_link() -> Response:
    return await _message(
        "This link can't be used",
        "The confirmation link is invalid, has expired or was already used.",
        link=url_for("accounts.resend_verification"),
        link_text="Send a new link",
        status=400,
    )


@blueprint.post("/verify-email")
async def verify_email_submit() -> Response:
    from idp.accounts.registration import signup

    await require_csrf()
    rt = runtime()
    form = await request.form
    verified = await signup.verify_email(rt.accounts, form.get("token"), csrf_binding())
    if verified is None:
        return await _invalid_verification_link()
    return_to = _return_to(verified.return_to, "/account")
    if not verified.same_browser:
        return await _message(
            "Email address confirmed",
            "Your account is active. Sign in to continue.",
            link=url_for("accounts.login", return_to=return_to),
            link_text="Sign in",
        )
    # The browser that registered (and chose the password) confirms: sign it in and carry on
    # with the application that asked for the registration (prompt=create).
    from idp.storage.repositories import UserRepository

    async with rt.db.session() as db_session:
        user = await UserRepository(db_session).get(verified.user_id)
    if user is not None and mfa.mfa_required(rt.settings.mfa.required, user):
        # A new account has no second factor: policy says it sets one up before it is signed in.
        return await mfa_routes.start_second_step(verified.user_id, return_to, enrol=True)
    response = see_other(return_to)
    signed_in = authn.password_only()
    await start_browser_session(verified.user_id, signed_in.amr, signed_in.acr, response)
    return response


@blueprint.route("/verify-email/resend", methods=["GET", "POST"])
async def resend_verification() -> Response:
    from quart import current_app

    from idp.accounts.context import in_background
    from idp.accounts.registration import signup

    return_to = _return_to(request.args.get("return_to"))
    if request.method == "GET":
        return await _form_page(
            title="Send the confirmation link again",
            text="Enter the address you registered with.",
            action=url_for("accounts.resend_verification"),
            hidden={"return_to": return_to} if return_to else {},
            ask_email=True,
            submit="Send link",
        )
    await require_csrf()
    form = await request.form
    await enforce_limits(
        {
            "verification_resend_per_ip": client_ip(),
            "verification_resend_per_account": _limit_subject(form.get("email")),
        },
        "requests for a confirmation link",
    )
    # After the answer: a link is made and mailed only for an unverified account (ASVS 6.3.8).
    current_app.add_background_task(
        in_background,
        signup.resend_verification(
            runtime().accounts,
            form.get("email") or "",
            return_to=_return_to(form.get("return_to")) or None,
            browser_binding=csrf_binding(),
        ),
    )
    return await _message(
        "Check your email",
        "If that address belongs to an account waiting for confirmation, we sent a new link.",
    )


def _limit_subject(email: str | None) -> str | None:
    """The per-address limit's key: the address as accounts are looked up by (whether or not one
    exists, so the limit says nothing about which do)."""
    from idp.storage.repositories import normalize_email

    email = (email or "").strip()
    return normalize_email(email)[:320] if email else None


@blueprint.route("/forgot-password", methods=["GET", "POST"])
async def forgot_password() -> Response:
    from quart import current_app

    from idp.accounts.context import in_background
    from idp.accounts.recovery import passwords as recovery

    if request.method == "GET":
        return await _form_page(
            title="Reset your password",
            text="Enter your email address and we will send you a link to choose a new password.",
            action=url_for("accounts.forgot_password"),
            hidden={},
            ask_email=True,
            submit="Send reset link",
        )
    await require_csrf()
    form = await request.form
    await enforce_limits(
        {"password_reset_per_ip": client_ip(), "password_reset_per_account": _limit_subject(form.get("email"))},
        "password reset requests",
    )
    # The same answer, in the same time, whether or not the address has an account (ASVS 6.3.8):
    # the look-up, the link and the mail all happen after it.
    current_app.add_background_task(
        in_background, recovery.request_password_reset(runtime().accounts, form.get("email") or "")
    )
    return await _message(
        "Check your email",
        "If an account exists for that address, we sent a link to reset the password. It expires soon.",
    )


async def _reset_form(token: str, errors: dict[str, str] | None = None, status: int = 200) -> Response:
    html = await render_template(
        "accounts/password_form.html",
        title="Choose a new password",
        action=url_for("accounts.reset_password_submit"),
        csrf_token=csrf_token(),
        hidden={"token": token},
        ask_current=False,
        errors=errors or {},
        submit="Set password",
        policy=runtime().settings.password_policy,
    )
    return _page(html, status)


@blueprint.get("/reset-password")
async def reset_password() -> Response:
    from idp.accounts import links

    token = request.args.get("token") or ""
    if await links.peek(runtime().db, links.RESET_PASSWORD, token) is None:
        return await _invalid_reset_link()
    return await _reset_form(token)


async def _invalid_reset_link() -> Response:
    return await _message(
        "This link can't be used",
        "The reset link is invalid, has expired or was already used.",
        link=url_for("accounts.forgot_password"),
        link_text="Ask for a new link",
        status=400,
    )


@blueprint.post("/reset-password")
async def reset_password_submit() -> Response:
    from idp.accounts.recovery import passwords as recovery
    from idp.accounts.users import AccountError

    await require_csrf()
    form = await request.form
    token = form.get("token") or ""
    try:
        await recovery.reset_password(runtime().accounts, token, form.get("new_password") or "", ip=request.remote_addr)
    except AccountError as exc:
        if exc.field == "token":
            return await _invalid_reset_link()
        return await _reset_form(token, {"new_password": exc.message}, status=400)
    response = await _message(
        "Password changed",
        "Your new password is set and you have been signed out everywhere. Sign in with the new password.",
        link=url_for("accounts.login"),
        link_text="Sign in",
    )
    clear_cookie(response, SESSION_COOKIE)
    return response


async def _change_form(errors: dict[str, str] | None = None, status: int = 200) -> Response:
    html = await render_template(
        "accounts/password_form.html",
        title="Change your password",
        action=url_for("accounts.change_password"),
        csrf_token=csrf_token(),
        hidden={},
        ask_current=True,
        errors=errors or {},
        submit="Change password",
        policy=runtime().settings.password_policy,
    )
    return _page(html, status)


@blueprint.route("/account/password", methods=["GET", "POST"])
async def change_password() -> Response:
    from idp.accounts.recovery import passwords as recovery
    from idp.accounts.users import AccountError

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/password")
    if request.method == "GET":
        return await _change_form()
    await require_csrf()
    form = await request.form
    try:
        ended = await recovery.change_password(
            runtime().accounts,
            session,
            form.get("current_password") or "",
            form.get("new_password") or "",
            ip=client_ip(),
            device_token=device_token(),
        )
    except PasswordCheckRefused as exc:
        raise too_many_attempts(exc) from None
    except AccountError as exc:
        return await _change_form({exc.field: exc.message}, status=400)
    others = f" {ended} other session(s) were signed out." if ended else ""
    response = await _message(
        "Password changed",
        f"Your password has been changed.{others}",
        link="/account",
        link_text="Back to your account",
    )
    await rotate_browser_session(response)  # a privilege change: a new session cookie (ASVS 7.2.4)
    return response


# -- profile, activity and export pages ------------------------------------------------------
# The same domain functions as the account API (idp.accounts.profile.profile): the same validation, the
# same events; only the transport differs (a signed-in browser session and CSRF-checked forms).

# RFC 9470-style step-up, as the API: changing the sign-in address needs a sign-in this recent.
_EMAIL_CHANGE_MAX_AUTH_AGE = 900
# What a form decoder puts in place of bytes that were not UTF-8 (Quart decodes with "replace").
_NOT_UTF8 = "\ufffd"
_PROFILE_FIELD_LABELS: dict[str, str] = {
    "name": "Full name",
    "given_name": "Given name",
    "family_name": "Family name",
    "preferred_username": "Username",
    "locale": "Language (locale)",
    "zoneinfo": "Time zone",
    "email": "New email address",
}
_ACTIVITY_LABELS: dict[str, str] = {
    "user_created": "Account created",
    "registration_duplicate": "Registration attempted with this address",
    "email_verified": "Email address confirmed",
    "password_reset_requested": "Password reset requested",
    "password_reset": "Password reset",
    "password_changed": "Password changed",
    "profile_updated": "Profile updated",
    "email_change_requested": "Email address change requested",
    "email_changed": "Email address changed",
    "login_succeeded": "Signed in",
    "login_failed": "Sign-in failed",
    "logged_out": "Signed out",
    "consent_granted": "Access granted to an application",
    "consent_withdrawn": "Access withdrawn from an application",
    "account_deletion_started": "Account deletion started",
    "account_deleted": "Account deleted",
    "token_issued": "Tokens issued to an application",
    "token_revoked": "Tokens revoked",
    "session_ended": "Session ended",
    "new_device_sign_in": "Signed in from a new browser",
    "account_locked": "Sign-in blocked after failed attempts",
    "account_unlocked": "Sign-in unblocked",
    "account_disabled": "Account disabled",
    "account_enabled": "Account enabled",
}


def _activity_label(event: str) -> str:
    return _ACTIVITY_LABELS.get(event) or event.replace("_", " ").capitalize()


def _utc_time(value: str | None) -> str:
    """An RFC 3339 ``…Z`` timestamp (profile.iso) as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return value.replace("T", " ").removesuffix("Z") + " UTC" if value else ""


def _session_is_stale(auth_time: int) -> bool:
    import time

    return time.time() - auth_time > _EMAIL_CHANGE_MAX_AUTH_AGE


async def _profile_page(
    user_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    email_value: str = "",
    notice: str | None = None,
    status: int = 200,
) -> Response:
    import asyncio

    from idp.accounts.profile import profile
    from idp.storage.repositories import UserRepository

    rt = runtime()
    async with rt.db.session() as db_session:
        user = await UserRepository(db_session).get(user_id)
    if user is None:
        return see_other("/login?return_to=/account/profile")
    zones = sorted(await asyncio.to_thread(profile.time_zones))  # the first call reads the zone database
    current = {field: getattr(user, field) for field in profile.EDITABLE_FIELDS}
    html = await render_template(
        "accounts/profile.html",
        csrf_token=csrf_token(),
        user=user,
        fields=[field for field in profile.TEXT_LIMITS],
        limits={**profile.TEXT_LIMITS, "locale": profile.LOCALE_MAX_LENGTH},
        labels=_PROFILE_FIELD_LABELS,
        values={**current, **(values or {})},
        zones=zones,
        errors=errors or {},
        email_value=email_value,
        pending=await profile.pending_email(rt.db, user_id),
        notice=notice,
    )
    return _page(html, status)


_PROFILE_NOTICES = {
    "saved": "Your profile has been saved.",
    "email": "We sent a link to the new address. Your address changes when you open it.",
}


@blueprint.route("/account/profile", methods=["GET", "POST"])
@validates_own_form_text
async def profile_page() -> Response:
    """Edit the profile claims; the same rules and event as PATCH /api/account/profile."""
    import asyncio

    from idp.accounts.profile import profile
    from idp.accounts.users import AccountError

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/profile")
    if request.method == "GET":
        return await _profile_page(session.user_id, notice=_PROFILE_NOTICES.get(request.args.get("notice", "")))
    await require_csrf()
    form = await request.form
    submitted = {field: form.get(field, "") for field in profile.EDITABLE_FIELDS if field in form}
    shown = {field: _echo(value, 400) for field, value in submitted.items()}
    for field, value in submitted.items():
        if _NOT_UTF8 in value:
            error = {field: "could not be read (it was not valid UTF-8)"}
            return await _profile_page(session.user_id, values=shown, errors=error, status=400)
    if "zoneinfo" in submitted:
        await asyncio.to_thread(profile.time_zones)  # the first call reads the zone database
    try:
        changes = profile.check_profile_update(submitted)
        await profile.update_profile(runtime().db, runtime().events, session.user_id, changes)
    except AccountError as exc:
        return await _profile_page(session.user_id, values=shown, errors={exc.field: exc.message}, status=400)
    return see_other("/account/profile?notice=saved")


@blueprint.post("/account/email")
async def request_email_change_page() -> Response:
    """Ask for a new sign-in address: a link goes to it; the same answer whether or not it is taken."""
    from idp.accounts.profile import profile
    from idp.accounts.users import AccountError

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/profile")
    await require_csrf()
    if _session_is_stale(session.auth_time):
        # As the API (RFC 9470): a sign-in at most 15 minutes old; signing in again makes a new session.
        return see_other("/login?return_to=/account/profile")
    form = await request.form
    email = (form.get("email") or "").strip()
    if _NOT_UTF8 in email:
        return await _profile_page(
            session.user_id,
            errors={"email": "could not be read (it was not valid UTF-8)"},
            email_value=_echo(email, 320),
            status=400,
        )
    try:
        await profile.request_email_change(runtime().accounts, session.user_id, email)
    except AccountError as exc:
        return await _profile_page(
            session.user_id, errors={exc.field: exc.message}, email_value=_echo(email, 320), status=400
        )
    return see_other("/account/profile?notice=email")


@blueprint.get("/account/activity")
async def activity_page() -> Response:
    """The user's own audit trail, newest first, 20 at a time (``before`` is the cursor)."""
    from idp.accounts.profile import profile
    from idp.accounts.users import AccountError

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/activity")
    try:
        limit, before = profile.parse_activity_query(None, request.args.get("before"))
    except AccountError:
        return await _message(
            "This page can't be shown",
            "The link to older activity is not valid.",
            link=url_for("accounts.activity_page"),
            link_text="Show the latest activity",
            status=400,
        )
    page = await profile.activity(runtime().db, session.user_id, limit=limit, before=before)
    items = [
        {**item, "label": _activity_label(item["event"]), "time": _utc_time(item["occurred_at"])} for item in page.items
    ]
    html = await render_template(
        "accounts/activity.html",
        items=items,
        older=url_for("accounts.activity_page", before=page.next) if page.next is not None else None,
        newest=url_for("accounts.activity_page") if before is not None else None,
    )
    return _page(html)


@blueprint.get("/account/export")
async def export_page() -> Response:
    """Download what the account API's export returns (a GET: it changes nothing)."""
    from quart import jsonify

    from idp.accounts.api import EXPORT_FILENAME
    from idp.accounts.profile import profile

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/export")
    rt = runtime()
    from idp.accounts.sessions import store as sessions

    data = await profile.export_account(
        rt.db,
        session.user_id,
        picture_base_url=f"{rt.settings.issuer}/pictures",
        sessions=await sessions.describe_all(rt.sessions, rt.db, session.user_id, current_sid=session.sid),
    )
    if data is None:
        return see_other("/login?return_to=/account/export")
    response = jsonify(data)
    response.headers["Content-Disposition"] = f'attachment; filename="{EXPORT_FILENAME}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.route("/account/email/confirm", methods=["GET", "POST"])
async def confirm_email_change() -> Response:
    """The link mailed to a new address: GET only shows a button (mail scanners prefetch links)."""
    from idp.accounts.profile import profile

    rt = runtime()
    if request.method == "GET":
        token = request.args.get("token") or ""
        new_email = await profile.peek_email_change(rt.accounts, token)
        if new_email is None:
            return await _message(
                "This link can't be used",
                "The confirmation link is invalid, has expired or "
                "was already used. Ask for the change again from your account.",
                status=400,
            )
        return await _form_page(
            title="Confirm your new email address",
            text=f"Use {new_email} as the address of your account from now on.",
            action=url_for("accounts.confirm_email_change"),
            hidden={"token": token},
            ask_email=False,
            submit="Confirm new address",
        )
    await require_csrf()
    form = await request.form
    if await profile.confirm_email_change(rt.accounts, form.get("token")) is None:
        return await _message(
            "This link can't be used",
            "The confirmation link is invalid, has expired or was "
            "already used, or the address now belongs to another account.",
            status=400,
        )
    return await _message(
        "Email address changed",
        "Your account now uses the new address.",
        link="/account",
        link_text="Back to your account",
    )


@blueprint.route("/account/delete", methods=["GET", "POST"])
async def delete_account() -> Response:
    """Delete the account and everything held about it, confirmed with the password."""
    from idp.accounts.profile import deletion
    from idp.accounts.users import AccountError

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/delete")
    error = None
    if request.method == "POST":
        await require_csrf()
        form = await request.form
        if form.get("confirm") != "delete":
            error = "Tick the box to confirm that you want to delete your account."
        else:
            try:
                await deletion.delete_account(
                    runtime().accounts,
                    session.user_id,
                    password=form.get("password") or "",
                    ip=client_ip(),
                    device_token=device_token(),
                    delete_blob=runtime().delete_picture,
                )
            except PasswordCheckRefused as exc:
                raise too_many_attempts(exc) from None
            except AccountError as exc:
                error = exc.message
            else:
                response = await _message(
                    "Account deleted",
                    "Your account and the data held about it have been "
                    "deleted, and the applications you used were signed out.",
                )
                clear_cookie(response, SESSION_COOKIE)
                return response
    html = await render_template("accounts/delete.html", csrf_token=csrf_token(), error=error)
    return _page(html, 400 if error else 200)


# -- profile picture ---------------------------------------------------------------------------
# The upload form and the public files. The `picture` claim points at /pictures/<name>, so those
# are served to anyone; their names are random and change with every upload (immutable caching).

PICTURE_CACHE_CONTROL = "public, max-age=86400, immutable"


async def _picture_form(user_id: str, *, error: str | None = None, status: int = 200) -> Response:
    from idp.accounts.profile.profile import picture_url
    from idp.storage.models import User

    rt = runtime()
    async with rt.db.session() as db_session:
        user = await db_session.get(User, user_id)
    stored = user.picture if user is not None else None
    html = await render_template(
        "accounts/picture.html",
        csrf_token=csrf_token(),
        picture=picture_url(stored, f"{rt.settings.issuer}/pictures") if stored else None,
        max_mb=round(rt.settings.pictures.max_upload_bytes / (1024 * 1024), 1),
        error=error,
    )
    return _page(html, status)


@blueprint.route("/account/picture", methods=["GET", "POST"])
async def picture_page() -> Response:
    """Upload (multipart, CSRF-checked) or remove the profile picture."""
    from idp.accounts.profile import pictures
    from idp.accounts.users import AccountError

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/picture")
    if request.method == "GET":
        return await _picture_form(session.user_id)
    rt = runtime()
    limit = rt.settings.pictures.max_upload_bytes
    too_large = f"The picture may be at most {limit} bytes."
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        return await _picture_form(session.user_id, error=too_large, status=413)
    await require_csrf()
    form = await request.form
    try:
        if form.get("action") == "remove":
            await pictures.remove_picture(rt.accounts, rt.blobs, session.user_id, rt.settings.pictures)
            return see_other(url_for("accounts.picture_page"))
        upload = (await request.files).get("picture")
        if upload is None:
            raise AccountError("picture", "choose an image file to upload")
        await pictures.set_picture(rt.accounts, rt.blobs, session.user_id, upload.read(limit + 1), rt.settings.pictures)
    except pictures.PictureTooLarge:
        return await _picture_form(session.user_id, error=too_large, status=413)
    except AccountError as exc:
        return await _picture_form(session.user_id, error=f"The picture {exc.message}.", status=400)
    return see_other(url_for("accounts.picture_page"))


@blueprint.get("/pictures/<name>")
async def serve_picture(name: str) -> Response:
    """A stored picture, public (it is the `picture` claim) and cacheable for ever."""
    from idp.errors import NotFound

    found = await runtime().blobs.get(name)
    if found is None:
        raise NotFound("There is no picture of that name.")
    data, content_type = found
    response = Response(data, status=200, content_type=content_type)
    response.headers["Cache-Control"] = PICTURE_CACHE_CONTROL
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response
