"""What the admin pages share: their blueprint (``/admin/…``), who may open them, the confirmation
every action asks for, and the fresh authentication destructive ones need.

Who may: a signed-in browser whose account is an enabled administrator now (checked at every
request, not when the session began). Under ``[admin] require_mfa`` the session must also have
been signed in with a second factor: an administrator without one is sent to set one up, one who
has a factor but signed in without it (it was added later) signs in again.

Every action is a GET that shows what will happen and a POST from that page (CSRF-protected) that
does it, so nothing changes by following a link, and the pages work without JavaScript.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from quart import Blueprint, Response, g, render_template, request

from idp.accounts.security.mfa import factor_status
from idp.accounts.sessions.store import BrowserSession
from idp.accounts.users import AccountError
from idp.accounts.web import load_user, page, reauthenticate
from idp.errors import Forbidden
from idp.events import set_actor
from idp.http import runtime
from idp.oauth.clients import ClientValidationError
from idp.storage.models import User
from idp.web import csrf_token, current_session, require_csrf, see_other

admin_pages = Blueprint("admin", __name__, url_prefix="/admin")


def sign_in_url(return_to: str) -> str:
    return f"/login?{urlencode({'return_to': return_to})}"


def _here() -> str:
    query = request.query_string.decode("ascii", "replace")
    return request.path + (f"?{query}" if query else "")


@admin_pages.before_request
async def _only_administrators() -> Response | None:
    session = await current_session()
    if session is None:
        return see_other(sign_in_url(_here() if request.method == "GET" else "/admin"))
    user = await load_user(session.user_id)
    if user is None or user.disabled or not user.is_admin:
        raise Forbidden("These pages are for administrators.")
    rt = runtime()
    if rt.settings.admin.require_mfa and "mfa" not in session.amr:
        if not (await factor_status(rt.db, user.id)).any:
            return see_other("/account/security?notice=admin-needs-mfa")
        return see_other(sign_in_url(_here() if request.method == "GET" else "/admin"))
    g.admin_user, g.admin_session = user, session
    set_actor(user.id, via="admin_page")
    return None


def administrator() -> User:
    user: User = g.admin_user
    return user


def admin_session() -> BrowserSession:
    session: BrowserSession = g.admin_session
    return session


# -- confirming an action --------------------------------------------------------------------------


def fresh(session: BrowserSession) -> bool:
    """A sign-in (password or passkey) within ``[admin] fresh_auth_max_age`` seconds."""
    return time.time() - session.auth_time <= runtime().settings.admin.fresh_auth_max_age


@dataclass(frozen=True)
class Confirmation:
    """What an action's confirmation page says, and whether the action is destructive enough to
    need a fresh sign-in."""

    title: str
    text: str
    button: str
    back: str
    needs_fresh: bool = False
    danger: bool = False


async def _confirm_page(confirmation: Confirmation, *, error: str | None = None, status: int = 200) -> Response:
    """The form that posts to this same URL. A destructive action without a fresh sign-in also
    asks for the password (or a new sign-in)."""
    html = await render_template(
        "admin/confirm.html",
        title=confirmation.title,
        text=confirmation.text,
        button=confirmation.button,
        back=confirmation.back,
        action=request.path,
        danger=confirmation.danger,
        error=error,
        csrf_token=csrf_token(),
        ask_password=confirmation.needs_fresh and not fresh(admin_session()),
        has_password=administrator().password_hash is not None,
        sign_in_again=sign_in_url(request.path),
    )
    return page(html, status)


async def _refusal(needs_fresh: bool) -> str | None:
    """After require_csrf: None when the action may go ahead; otherwise why not. The password
    counts as a sign-in attempt (too many: 429)."""
    await require_csrf()
    if not needs_fresh or fresh(admin_session()):
        return None
    password = (await request.form).get("password") or ""
    if not password:
        return "This action needs a recent sign-in: enter your password, or sign in again."
    try:
        await reauthenticate(administrator().id, password)
    except AccountError as exc:
        return exc.message
    return None


async def confirm_then(confirmation: Confirmation, act: Callable[[], Awaitable[Response]]) -> Response:
    """Every admin action: GET shows the confirmation; POST checks the CSRF token and, for a
    destructive action, a fresh sign-in (403 and the page again otherwise), then does ``act``.
    A refusal of the domain (the last administrator, a client without a secret) is the page
    again with the reason (409)."""
    if request.method == "GET":
        return await _confirm_page(confirmation)
    if (refusal := await _refusal(confirmation.needs_fresh)) is not None:
        return await _confirm_page(confirmation, error=refusal, status=403)
    try:
        return await act()
    except (AccountError, ClientValidationError) as exc:
        return await _confirm_page(confirmation, error=exc.message, status=409)


async def admin_page(template: str, **context: object) -> Response:
    html = await render_template(template, csrf_token=csrf_token(), me=administrator(), **context)
    return page(html)
