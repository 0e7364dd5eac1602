"""The account's sessions page: where the user is signed in, and ending any of those sessions.

Ending a session from here logs that browser out at its next request (the session is gone from the
shared store), and tells the applications it used (back-channel logout, see SessionEnded).
"""

from __future__ import annotations

from quart import Blueprint, Response, render_template, request, url_for

from idp.accounts import sessions
from idp.app import runtime
from idp.web import SESSION_COOKIE, clear_cookie, csrf_token, current_session, require_csrf, see_other

blueprint = Blueprint("sessions", __name__)

_NOTICES = {
    "ended": "The session was ended. That browser is signed out.",
    "others-ended": "Every other session was ended.",
    "none-ended": "That session had already ended.",
}
_SIGN_IN = "/login?return_to=/account/sessions"


def _page(html: str, status: int = 200) -> Response:
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/account/sessions")
async def sessions_page() -> Response:
    session = await current_session()
    if session is None:
        return see_other(_SIGN_IN)
    rt = runtime()
    items = await sessions.describe_all(rt.sessions, rt.db, session.user_id, current_sid=session.sid)
    html = await render_template(
        "accounts/sessions.html",
        sessions=items,
        csrf_token=csrf_token(),
        notice=_NOTICES.get(request.args.get("notice", "")),
    )
    return _page(html)


@blueprint.post("/account/sessions/<sid>/end")
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
    ended = len(sid) <= 64 and await rt.sessions.end_by_sid(session.user_id, sid, reason="ended_by_user")
    return see_other(url_for("sessions.sessions_page", notice="ended" if ended else "none-ended"))


@blueprint.post("/account/sessions/end-others")
async def end_other_sessions() -> Response:
    session = await current_session()
    if session is None:
        return see_other(_SIGN_IN)
    await require_csrf()
    await runtime().sessions.end_all_for_user(session.user_id, keep=session.digest, reason="ended_by_user")
    return see_other(url_for("sessions.sessions_page", notice="others-ended"))
