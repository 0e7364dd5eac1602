"""The account's own pages: the overview, the profile claims and the sign-in address, the activity
trail and the export, deleting the account, and the profile picture (with the public picture files).

The same domain functions as the account API (idp.accounts.profile): the same validation, the same
events; only the transport differs (a signed-in browser session and CSRF-checked forms).
"""

from __future__ import annotations

import asyncio
import time

from quart import Response, jsonify, render_template, request, url_for

from idp.accounts.profile import deletion, pictures, profile
from idp.accounts.profile.profile import EXPORT_FILENAME, picture_url
from idp.accounts.sessions.devices import device_label
from idp.accounts.sessions.store import describe_all
from idp.accounts.signin.password import PasswordCheckRefused
from idp.accounts.users import REPLACEMENT_CHARACTER, AccountError
from idp.accounts.web import account_pages, echo, form_page, load_user, message, notice, page, too_many_attempts
from idp.errors import NotFound
from idp.http import runtime
from idp.web import (
    SESSION_COOKIE,
    clear_cookie,
    client_ip,
    csrf_token,
    current_session,
    device_token,
    require_csrf,
    see_other,
    validates_own_form_text,
)


@account_pages.get("/")
async def home() -> Response:
    return see_other("/account")


@account_pages.get("/account")
async def account_home() -> Response:
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account")
    user = await load_user(session.user_id)
    html = await render_template("accounts/home.html", user=user, csrf_token=csrf_token())
    return page(html)


# -- profile, activity and export pages ------------------------------------------------------

# RFC 9470-style step-up, as the API: changing the sign-in address needs a sign-in this recent.
_EMAIL_CHANGE_MAX_AUTH_AGE = 900
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
    rt = runtime()
    user = await load_user(user_id)
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
    return page(html, status)


_PROFILE_NOTICES = {
    "saved": "Your profile has been saved.",
    "email": "We sent a link to the new address. Your address changes when you open it.",
}


@account_pages.route("/account/profile", methods=["GET", "POST"])
@validates_own_form_text
async def profile_page() -> Response:
    """Edit the profile claims; the same rules and event as PATCH /api/account/profile."""
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/profile")
    if request.method == "GET":
        return await _profile_page(session.user_id, notice=notice(_PROFILE_NOTICES))
    await require_csrf()
    form = await request.form
    submitted = {field: form.get(field, "") for field in profile.EDITABLE_FIELDS if field in form}
    shown = {field: echo(value, 400) for field, value in submitted.items()}
    for field, value in submitted.items():
        if REPLACEMENT_CHARACTER in value:
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


@account_pages.post("/account/email")
async def request_email_change_page() -> Response:
    """Ask for a new sign-in address: a link goes to it; the same answer whether or not it is taken."""
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/profile")
    await require_csrf()
    if _session_is_stale(session.auth_time):
        # As the API (RFC 9470): a sign-in at most 15 minutes old; signing in again makes a new session.
        return see_other("/login?return_to=/account/profile")
    form = await request.form
    email = (form.get("email") or "").strip()
    if REPLACEMENT_CHARACTER in email:
        return await _profile_page(
            session.user_id,
            errors={"email": "could not be read (it was not valid UTF-8)"},
            email_value=echo(email, 320),
            status=400,
        )
    try:
        await profile.request_email_change(runtime().accounts, session.user_id, email)
    except AccountError as exc:
        return await _profile_page(
            session.user_id, errors={exc.field: exc.message}, email_value=echo(email, 320), status=400
        )
    return see_other("/account/profile?notice=email")


@account_pages.get("/account/activity")
async def activity_page() -> Response:
    """The user's own audit trail, newest first, 20 at a time (``before`` is the cursor)."""
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/activity")
    try:
        limit, before = profile.parse_activity_query(None, request.args.get("before"))
    except AccountError:
        return await message(
            "This page can't be shown",
            "The link to older activity is not valid.",
            link=url_for("accounts.activity_page"),
            link_text="Show the latest activity",
            status=400,
        )
    found = await profile.activity(runtime().db, session.user_id, limit=limit, before=before)
    items = [
        {
            **item,
            "label": _activity_label(item["event"]),
            "time": _utc_time(item["occurred_at"]),
            # The browser as people name it ("Firefox 120 on Windows"), not its user-agent string.
            "device": device_label(item["user_agent"]) if item["user_agent"] else None,
        }
        for item in found.items
    ]
    html = await render_template(
        "accounts/activity.html",
        items=items,
        older=url_for("accounts.activity_page", before=found.next) if found.next is not None else None,
        newest=url_for("accounts.activity_page") if before is not None else None,
    )
    return page(html)


@account_pages.get("/account/export")
async def export_page() -> Response:
    """Download what the account API's export returns (a GET: it changes nothing)."""
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/export")
    rt = runtime()
    data = await profile.export_account(
        rt.db,
        session.user_id,
        picture_base_url=f"{rt.settings.issuer}/pictures",
        sessions=await describe_all(rt.sessions, rt.db, session.user_id, current_sid=session.sid),
    )
    if data is None:
        return see_other("/login?return_to=/account/export")
    response = jsonify(data)
    response.headers["Content-Disposition"] = f'attachment; filename="{EXPORT_FILENAME}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@account_pages.route("/account/email/confirm", methods=["GET", "POST"])
async def confirm_email_change() -> Response:
    """The link mailed to a new address: GET only shows a button (mail scanners prefetch links)."""
    rt = runtime()
    if request.method == "GET":
        token = request.args.get("token") or ""
        new_email = await profile.peek_email_change(rt.accounts, token)
        if new_email is None:
            return await message(
                "This link can't be used",
                "The confirmation link is invalid, has expired or "
                "was already used. Ask for the change again from your account.",
                status=400,
            )
        return await form_page(
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
        return await message(
            "This link can't be used",
            "The confirmation link is invalid, has expired or was "
            "already used, or the address now belongs to another account.",
            status=400,
        )
    return await message(
        "Email address changed",
        "Your account now uses the new address.",
        link="/account",
        link_text="Back to your account",
    )


@account_pages.route("/account/delete", methods=["GET", "POST"])
async def delete_account() -> Response:
    """Delete the account and everything held about it, confirmed with the password."""
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
                response = await message(
                    "Account deleted",
                    "Your account and the data held about it have been "
                    "deleted, and the applications you used were signed out.",
                )
                clear_cookie(response, SESSION_COOKIE)
                return response
    html = await render_template("accounts/delete.html", csrf_token=csrf_token(), error=error)
    return page(html, 400 if error else 200)


# -- profile picture ---------------------------------------------------------------------------
# The upload form and the public files. The `picture` claim points at /pictures/<name>, so those
# are served to anyone; their names are random and change with every upload (immutable caching).

PICTURE_CACHE_CONTROL = "public, max-age=86400, immutable"


async def _picture_form(user_id: str, *, error: str | None = None, status: int = 200) -> Response:
    rt = runtime()
    user = await load_user(user_id)
    stored = user.picture if user is not None else None
    html = await render_template(
        "accounts/picture.html",
        csrf_token=csrf_token(),
        picture=picture_url(stored, f"{rt.settings.issuer}/pictures") if stored else None,
        max_mb=round(rt.settings.pictures.max_upload_bytes / (1024 * 1024), 1),
        error=error,
    )
    return page(html, status)


@account_pages.route("/account/picture", methods=["GET", "POST"])
async def picture_page() -> Response:
    """Upload (multipart, CSRF-checked) or remove the profile picture."""
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


@account_pages.get("/pictures/<name>")
async def serve_picture(name: str) -> Response:
    """A stored picture, public (it is the `picture` claim) and cacheable for ever."""
    found = await runtime().blobs.get(name)
    if found is None:
        raise NotFound("There is no picture of that name.")
    data, content_type = found
    response = Response(data, status=200, content_type=content_type)
    response.headers["Cache-Control"] = PICTURE_CACHE_CONTROL
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response
