"""What the account pages and the account API share in HTTP: the page blueprints, rendering a page
or a message, JSON bodies and answers, the password re-check, and the steps more than one page
module takes (the second step after a password, the enrolment pages).

Each feature's ``pages`` module adds its routes to one of the three page blueprints defined here,
whose names are the endpoint prefixes the templates use (``accounts.login``, ``mfa.security``,
``sessions.sessions_page``); idp.accounts.blueprints imports them all. A page module never imports
another one (nor the API): what two of them need lives here.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from quart import Blueprint, Response, jsonify, render_template, request, url_for

from idp.accounts.profile.profile import field_label
from idp.accounts.security import mfa, passkeys
from idp.accounts.signin import authn
from idp.accounts.signin import password as password_signin
from idp.accounts.signin.password import PasswordChecked, PasswordCheckRefused
from idp.accounts.signin.pending import PENDING_COOKIE
from idp.accounts.users import AccountError, normalize_email
from idp.errors import InvalidRequest, PayloadTooLarge, TooManyRequests, UnsupportedMediaType
from idp.events import LoginFailed
from idp.http import runtime
from idp.security import inputs
from idp.security.ratelimit import RateLimited
from idp.storage.models import User
from idp.storage.repositories import UserRepository
from idp.web import client_ip, csrf_token, device_token, see_other, set_cookie, start_browser_session

# Sign-in, registration, passwords, the account's own pages and connected apps.
account_pages = Blueprint("accounts", __name__)
# Second factors: the step after the password, passwordless sign-in, enrolment, the security page.
mfa_pages = Blueprint("mfa", __name__)
# Where the user is signed in.
session_pages = Blueprint("sessions", __name__)


# -- pages -------------------------------------------------------------------------------------------


def page(html: str, status: int = 200) -> Response:
    """A rendered page; never cached (each one is personal, or carries a CSRF token)."""
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


async def message(
    title: str, text: str, *, link: str | None = None, link_text: str = "", status: int = 200
) -> Response:
    return page(
        await render_template("accounts/message.html", title=title, text=text, link=link, link_text=link_text),
        status,
    )


async def form_page(
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
    return page(html)


def echo(value: str, limit: int) -> str:
    """A submitted value to show back in the form, without control characters."""
    return "".join(char for char in value[:limit] if ord(char) >= 0x20 and ord(char) != 0x7F)


def notice(texts: dict[str, str]) -> str | None:
    """The confirmation a page shows after a redirect (``?notice=…``), from its own ``texts``."""
    return texts.get(request.args.get("notice", ""))


def limit_subject(email: str | None) -> str | None:
    """The per-address limit's key: the address as accounts are looked up by (whether or not one
    exists, so the limit says nothing about which do)."""
    email = (email or "").strip()
    return normalize_email(email)[:320] if email else None


async def load_user(user_id: str) -> User | None:
    async with runtime().db.session() as db_session:
        return await UserRepository(db_session).get(user_id)


# -- JSON bodies and answers (the account API, and the pages' fetch() calls) -------------------------

MAX_BODY_BYTES = 16 * 1024


class InvalidField(InvalidRequest):
    """A 400 naming the member (or ``body``, ``limit``, …) at fault, also as ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        # The JSON APIs' shape (idp.json_api): the member in ``field`` and in ``fields``.
        problem = self.description.removeprefix(f"{self.field}: ")
        return {**super().to_dict(), "field": self.field, "fields": {self.field: problem}}


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {field_label(key)!r}")
        result[key] = value
    return result


async def json_body() -> dict[str, Any]:
    """A JSON object from a body of at most MAX_BODY_BYTES of UTF-8 (RFC 8259 §8.1)."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("The request body must be application/json.")
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("The request body must be UTF-8 encoded JSON.")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The request body may be at most {MAX_BODY_BYTES} bytes.")
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The request body may be at most {MAX_BODY_BYTES} bytes.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidField("body", f"is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise InvalidField("body", f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InvalidField("body", "is nested too deeply") from None
    except ValueError as exc:
        raise InvalidField("body", f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidField("body", "must be a JSON object")
    # "\u0000" and lone surrogates ("\ud800") are valid JSON escapes but not storable text.
    if (unusable := inputs.unusable_in_json(data)) is not None:
        raise InvalidField(field_label(unusable[0]), f"contains {unusable[1]}, which is not allowed")
    return data


async def picture_upload(limit: int) -> bytes:
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


def json_response(data: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(data)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def json_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)


# -- checking the user again -------------------------------------------------------------------------


def too_many_attempts(exc: PasswordCheckRefused) -> TooManyRequests:
    """A password check refused for too many attempts, as the 429 (with Retry-After) to answer."""
    return TooManyRequests(exc.retry_after, exc.message)


async def reauthenticate(user_id: str, password: str) -> None:
    """The signed-in user's password again (idp.accounts.signin.password.reauthenticate), as a
    sign-in attempt from this browser: its IP, and its device cookie telling whether it is the
    owner's. Raises AccountError("password", …) when wrong, TooManyRequests (429, Retry-After) when
    refused."""
    try:
        await password_signin.reauthenticate(
            runtime().accounts.sign_in, user_id, password, ip=client_ip(), device_token=device_token()
        )
    except PasswordCheckRefused as exc:
        raise too_many_attempts(exc) from None


async def count_second_factor_attempt(user_id: str | None) -> None:
    """One second-factor attempt against the per-account and per-IP limits."""
    try:
        await runtime().limits.hit_all({"mfa_per_account": user_id, "mfa_per_ip": client_ip()})
    except RateLimited as exc:
        await runtime().events.publish(LoginFailed(reason="rate_limited", user_id=user_id, factor="second_factor"))
        minutes = max(1, round(exc.retry_after / 60))
        raise TooManyRequests(
            exc.retry_after, f"Too many attempts. Wait {minutes} minute(s) before trying again."
        ) from None


# -- steps of a sign-in that more than one page takes ------------------------------------------------


async def start_second_step(user_id: str, return_to: str, *, enrol: bool) -> Response:
    """After a correct password: remember the sign-in and ask for the second factor (or, when
    ``enrol``, for setting one up)."""
    rt = runtime()
    cookie, _pending = await rt.pending_logins.start(user_id, return_to, enrol=enrol)
    response = see_other(url_for("mfa.setup_at_login") if enrol else url_for("mfa.second_factor"))
    set_cookie(response, PENDING_COOKIE, cookie, max_age=rt.pending_logins.ttl)
    return response


async def continue_sign_in(user: User, return_to: str, *, password: PasswordChecked | None = None) -> Response:
    """The password proved ``user`` (who may sign in; ``password``: that check, which knows about
    the second factor and has writes to make): the second factor comes next if the account has one,
    or its enrolment if policy requires one and there is none yet, and no session exists until then;
    otherwise this browser is signed in (ASVS 7.2.4: a new session id, the old one ends)."""
    rt = runtime()
    has_factor = password.second_factor if password is not None else (await mfa.factor_status(rt.db, user.id)).any
    if has_factor or mfa.mfa_required(rt.settings.mfa.required, user):
        if password is not None:
            async with rt.db.session() as db_session:
                await password_signin.record_sign_in(db_session, password)
        return await start_second_step(user.id, return_to, enrol=not has_factor)
    response = see_other(return_to)
    await start_browser_session(user, authn.password_only(), response, password=password)
    return response


# -- enrolment of a second factor (during sign-in and on the security page) --------------------------


async def passkey_options(user: User, binding: str) -> Response:
    """Start adding a passkey for a page's fetch() call (idp.accounts.security.enrolment); at the
    limit of passkeys per account, the 400 that finishing would answer."""
    try:
        return json_response(await runtime().enrolment.passkey_options(user, binding=binding))
    except AccountError as exc:
        return json_error(400, "passkey_failed", exc.message)


async def add_passkey(user_id: str, binding: str) -> passkeys.Passkey | Response:
    """Finish adding a passkey from a page's fetch() call: the passkey, or the 400 to answer."""
    body = await json_body()
    try:
        return await runtime().enrolment.add_passkey(
            user_id,
            binding=binding,
            ceremony=str(body.get("ceremony") or ""),
            credential=body.get("credential") or {},
            name=str(body.get("name") or "Passkey"),
        )
    except AccountError as exc:
        return json_error(400, "passkey_failed", exc.message)


async def totp_setup_page(
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
    return page(html, status)


async def recovery_codes_page(codes: list[str], *, continue_action: str | None = None) -> Response:
    html = await render_template(
        "accounts/recovery_codes.html", codes=codes, csrf_token=csrf_token(), continue_action=continue_action
    )
    return page(html)
