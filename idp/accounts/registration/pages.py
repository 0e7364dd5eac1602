"""Registration pages: signing up, confirming the address with the emailed link (which signs in
the browser that registered), and asking for the link again. No answer says which addresses have
accounts (idp.accounts.registration.signup), and the mail goes out after the answer.
"""

from __future__ import annotations

from quart import Response, render_template, request, url_for

from idp.accounts import links
from idp.accounts.registration import signup
from idp.accounts.signin.eligibility import can_sign_in
from idp.accounts.users import AccountError
from idp.accounts.web import (
    account_pages,
    continue_sign_in,
    echo,
    form_page,
    limit_subject,
    load_user,
    message,
    page,
)
from idp.errors import NotFound
from idp.http import runtime
from idp.web import (
    client_ip,
    csrf_binding,
    csrf_token,
    enforce_limits,
    let_forms_leave_site,
    local_path,
    require_csrf,
    validates_own_form_text,
)


def _return_to(target: str | None, default: str = "") -> str:
    """A same-origin path to continue at, or ``default`` (local_path refuses control characters)."""
    return local_path(target, default)


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
    return page(html, status)


async def _registration_enabled() -> None:
    if not runtime().settings.accounts.registration_enabled:
        raise NotFound("Self-service registration is not available. Ask your administrator for an account.")


@account_pages.get("/register")
async def register() -> Response:
    await _registration_enabled()
    return await _register_page(return_to=_return_to(request.args.get("return_to")))


@account_pages.post("/register")
@validates_own_form_text
async def register_submit() -> Response:
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
            # The mail is queued in the outbox with the account (or the notice to a taken
            # address's owner) and sent after the answer, so SMTP time can't tell them apart (ASVS 6.3.8).
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
    if errors:
        return await _register_page(
            return_to=return_to, email=echo(email, 320), name=echo(name, 200), errors=errors, status=400
        )
    return await message(
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


@account_pages.get("/verify-email")
async def verify_email() -> Response:
    token = request.args.get("token") or ""
    # Opening the link only shows a button: mail scanners prefetch links, and a GET must not
    # use up a single-use token.
    link = await links.peek(runtime().db, links.VERIFY_EMAIL, token)
    if link is None:
        return await _invalid_verification_link()
    # Confirming signs the registering browser in and carries on to the application that asked
    # for the registration (prompt=create): the redirects after the POST leave the site, which a
    # form-action 'self' would stop (browsers apply form-action to them).
    if link.return_to:
        let_forms_leave_site(link.return_to)  # only for a flow that leaves the site (/authorize)
    return await form_page(
        title="Confirm your email address",
        text="Confirm that this address is yours to activate your account.",
        action=url_for("accounts.verify_email_submit"),
        hidden={"token": token},
        ask_email=False,
        submit="Confirm",
    )


async def _invalid_verification_link() -> Response:
    return await message(
        "This link can't be used",
        "The confirmation link is invalid, has expired or was already used.",
        link=url_for("accounts.resend_verification"),
        link_text="Send a new link",
        status=400,
    )


@account_pages.post("/verify-email")
async def verify_email_submit() -> Response:
    await require_csrf()
    rt = runtime()
    form = await request.form
    verified = await signup.verify_email(rt.accounts, form.get("token"), csrf_binding())
    if verified is None:
        return await _invalid_verification_link()
    return_to = _return_to(verified.return_to, "/account")
    if not verified.same_browser:
        return await _confirmed(return_to)
    user = await load_user(verified.user_id)
    if user is None or not can_sign_in(user):  # disabled or deleted since the link was opened
        return await _confirmed(return_to)
    # The browser that registered (and chose the password) confirms: sign it in, as the password
    # would (a new account has no second factor: policy may ask it to set one up first), and carry
    # on with the application that asked for the registration (prompt=create).
    return await continue_sign_in(user, return_to)


async def _confirmed(return_to: str) -> Response:
    return await message(
        "Email address confirmed",
        "Your account is active. Sign in to continue.",
        link=url_for("accounts.login", return_to=return_to),
        link_text="Sign in",
    )


@account_pages.route("/verify-email/resend", methods=["GET", "POST"])
async def resend_verification() -> Response:
    return_to = _return_to(request.args.get("return_to"))
    if request.method == "GET":
        return await form_page(
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
            "verification_resend_per_account": limit_subject(form.get("email")),
        },
        "requests for a confirmation link",
    )
    # Only the request is recorded now (the same for every address, ASVS 6.3.8); the outbox's
    # worker makes and mails a link for an unverified account.
    await signup.resend_verification(
        runtime().accounts,
        form.get("email") or "",
        return_to=_return_to(form.get("return_to")) or None,
        browser_binding=csrf_binding(),
    )
    return await message(
        "Check your email",
        "If that address belongs to an account waiting for confirmation, we sent a new link.",
    )
