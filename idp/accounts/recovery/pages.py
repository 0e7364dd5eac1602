"""Password pages: asking for a reset link, resetting with it, and changing the password while
signed in; also the password rules as JSON for forms that check them as the user types.
"""

from __future__ import annotations

from quart import Response, jsonify, render_template, request, url_for

from idp.accounts import links
from idp.accounts.recovery import passwords
from idp.accounts.signin.password import PasswordCheckRefused
from idp.accounts.users import AccountError
from idp.accounts.web import (
    account_pages,
    form_page,
    json_body,
    json_error,
    limit_subject,
    message,
    page,
    too_many_attempts,
)
from idp.http import runtime
from idp.web import (
    SESSION_COOKIE,
    clear_cookie,
    client_ip,
    csrf_token,
    current_session,
    device_token,
    enforce_limits,
    require_csrf,
    require_csrf_header,
    rotate_browser_session,
    see_other,
)

# A password check takes what a password field could hold, and no more.
MAX_CHECKED_LENGTH = 4096


@account_pages.route("/forgot-password", methods=["GET", "POST"])
async def forgot_password() -> Response:
    if request.method == "GET":
        return await form_page(
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
        {"password_reset_per_ip": client_ip(), "password_reset_per_account": limit_subject(form.get("email"))},
        "password reset requests",
    )
    # The same answer, in the same time, whether or not the address has an account (ASVS 6.3.8):
    # only the request is recorded now (durably: a database outage is a 503, not a promise that
    # is dropped); the outbox's worker looks the address up, issues the link and mails it.
    await passwords.request_password_reset(runtime().accounts, form.get("email") or "")
    return await message(
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
    return page(html, status)


@account_pages.get("/reset-password")
async def reset_password() -> Response:
    token = request.args.get("token") or ""
    if await links.peek(runtime().db, links.RESET_PASSWORD, token) is None:
        return await _invalid_reset_link()
    return await _reset_form(token)


async def _invalid_reset_link() -> Response:
    return await message(
        "This link can't be used",
        "The reset link is invalid, has expired or was already used.",
        link=url_for("accounts.forgot_password"),
        link_text="Ask for a new link",
        status=400,
    )


@account_pages.post("/reset-password")
async def reset_password_submit() -> Response:
    await require_csrf()
    form = await request.form
    token = form.get("token") or ""
    try:
        await passwords.reset_password(
            runtime().accounts, token, form.get("new_password") or "", ip=request.remote_addr
        )
    except AccountError as exc:
        if exc.field == "token":
            return await _invalid_reset_link()
        return await _reset_form(token, {"new_password": exc.message}, status=400)
    response = await message(
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
    return page(html, status)


@account_pages.route("/account/password", methods=["GET", "POST"])
async def change_password() -> Response:
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/password")
    if request.method == "GET":
        return await _change_form()
    await require_csrf()
    form = await request.form
    try:
        ended = await passwords.change_password(
            runtime().accounts,
            session.user_id,
            form.get("current_password") or "",
            form.get("new_password") or "",
            keep=session,
            ip=client_ip(),
            device_token=device_token(),
        )
    except PasswordCheckRefused as exc:
        raise too_many_attempts(exc) from None
    except AccountError as exc:
        return await _change_form({exc.field: exc.message}, status=400)
    others = f" {ended} other session(s) were signed out." if ended else ""
    response = await message(
        "Password changed",
        f"Your password has been changed.{others}",
        link="/account",
        link_text="Back to your account",
    )
    await rotate_browser_session(response)  # a privilege change: a new session cookie (ASVS 7.2.4)
    return response


@account_pages.post("/account/password-check")
async def password_check() -> Response:
    """The verdict the form's submission would give on a candidate password, for the sign-up and
    password forms to show as the user types (progressive enhancement: without script the forms
    submit and the server says the same). The candidate is neither logged nor stored."""
    await require_csrf_header()
    await enforce_limits({"password_check_per_ip": client_ip()}, "password checks")
    body = await json_body()
    fields = {name: body.get(name) for name in ("password", "email", "name", "token")}
    for name, value in fields.items():
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CHECKED_LENGTH):
            return json_error(400, "invalid_request", f"{name} must be a string of at most {MAX_CHECKED_LENGTH}")
    if not fields["password"]:
        return json_error(400, "invalid_request", "password is required")
    session = await current_session()
    verdict = await passwords.judge_password(
        runtime().accounts,
        fields["password"],
        email=fields["email"],
        name=fields["name"],
        user_id=session.user_id if session is not None else None,
        reset_token=fields["token"],
    )
    response = jsonify({"acceptable": verdict.acceptable, "rule": verdict.rule, "message": verdict.message})
    response.headers["Cache-Control"] = "no-store"
    return response


@account_pages.get("/account/password-policy")
async def password_policy() -> Response:
    """The password rules as JSON, so forms (and the demo SPA) validate the same rules client-side."""
    response = jsonify(runtime().accounts.policy.describe())
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
