"""The account's sessions page: where the user is signed in, and ending any of those sessions.

Ending another session needs the user to have authenticated again (ASVS 7.5.2): the password on
the confirmation page (counted as a sign-in attempt), or a sign-in within the last few minutes
(accounts without a password sign in again). Ending it logs that browser out at its next request
(the session is gone from the shared store) and tells the applications it used (back-channel
logout, see SessionEnded).
Ending this browser's own session is signing out, which needs nothing more.
"""

from __future__ import annotations

from urllib.parse import urlencode

from quart import Response, render_template, request, url_for

from idp.accounts.sessions.store import BrowserSession, describe_all, recently_authenticated
from idp.accounts.users import AccountError
from idp.accounts.web import load_user, notice, page, reauthenticate, session_pages
from idp.http import runtime
from idp.web import (
    SESSION_COOKIE,
    clear_cookie,
    csrf_token,
    current_session,
    require_csrf,
    see_other,
)

_NOTICES = {
    "ended": "The session was ended. That browser is signed out.",
    "others-ended": "Every other session was ended.",
    "none-ended": "That session had already ended.",
}
_SIGN_IN = "/login?return_to=/account/sessions"


@session_pages.get("/account/sessions")
async def sessions_page() -> Response:
    session = await current_session()
    if session is None:
        return see_other(_SIGN_IN)
    rt = runtime()
    items = await describe_all(rt.sessions, rt.db, session.user_id, current_sid=session.sid)
    html = await render_template(
        "accounts/sessions.html",
        sessions=items,
        csrf_token=csrf_token(),
        notice=notice(_NOTICES),
    )
    return page(html)


# -- confirming with a fresh authentication --------------------------------------------------------


async def _has_password(user_id: str) -> bool:
    user = await load_user(user_id)
    return user is not None and user.password_hash is not None


async def _confirm_page(
    session: BrowserSession,
    *,
    target: dict[str, object] | None,
    action: str,
    error: str | None = None,
    status: int = 200,
) -> Response:
    recent = recently_authenticated(session)
    html = await render_template(
        "accounts/sessions_confirm.html",
        target=target,
        action=action,
        csrf_token=csrf_token(),
        ask_password=not recent and await _has_password(session.user_id),
        sign_in_again=f"/login?{_return_query(action)}",
        error=error,
    )
    return page(html, status)


def _return_query(path: str) -> str:
    return urlencode({"return_to": path})


async def _reauthenticated(session: BrowserSession) -> str | None:
    """None when the user has authenticated again (a recent sign-in, or the right password in the
    form); otherwise the error to show. The password counts as a sign-in attempt (too many: 429)."""
    if recently_authenticated(session):
        return None
    password = (await request.form).get("password") or ""
    if not password:
        return "Enter your password to confirm, or sign in again."
    try:
        await reauthenticate(session.user_id, password)
    except AccountError as exc:
        return exc.message
    return None


async def _target(session: BrowserSession, sid: str) -> dict[str, object] | None:
    rt = runtime()
    if len(sid) > 64:
        return None
    for item in await describe_all(rt.sessions, rt.db, session.user_id, current_sid=session.sid):
        if item["id"] == sid:
            return item
    return None


@session_pages.get("/account/sessions/<sid>/end")
async def end_session_confirm(sid: str) -> Response:
    session = await current_session()
    if session is None:
        return see_other(_SIGN_IN)
    target = await _target(session, sid)
    if target is None:
        return see_other(url_for("sessions.sessions_page", notice="none-ended"))
    return await _confirm_page(session, target=target, action=url_for("sessions.end_session", sid=sid))


@session_pages.post("/account/sessions/<sid>/end")
async def end_session(sid: str) -> Response:
    session = await current_session()
    if session is None:
        return see_other(_SIGN_IN)
    await require_csrf()
    rt = runtime()
    if sid == session.sid:
        # Ending this browser's own session is signing out.
        await rt.sessions.end(session, reason="logout")
        response = see_other("/login?return_to=/account")
        clear_cookie(response, SESSION_COOKIE)
        return response
    target = await _target(session, sid)
    if target is None:
        return see_other(url_for("sessions.sessions_page", notice="none-ended"))
    if (error := await _reauthenticated(session)) is not None:
        action = url_for("sessions.end_session", sid=sid)
        return await _confirm_page(session, target=target, action=action, error=error, status=400)
    ended = await rt.sessions.end_by_sid(session.user_id, sid, reason="ended_by_user")
    return see_other(url_for("sessions.sessions_page", notice="ended" if ended else "none-ended"))


@session_pages.get("/account/sessions/end-others")
async def end_other_sessions_confirm() -> Response:
    session = await current_session()
    if session is None:
        return see_other(_SIGN_IN)
    return await _confirm_page(session, target=None, action=url_for("sessions.end_other_sessions"))


@session_pages.post("/account/sessions/end-others")
async def end_other_sessions() -> Response:
    session = await current_session()
    if session is None:
        return see_other(_SIGN_IN)
    await require_csrf()
    if (error := await _reauthenticated(session)) is not None:
        action = url_for("sessions.end_other_sessions")
        return await _confirm_page(session, target=None, action=action, error=error, status=400)
    await runtime().sessions.end_all_for_user(session.user_id, keep=session.digest, reason="ended_by_user")
    return see_other(url_for("sessions.sessions_page", notice="others-ended"))
