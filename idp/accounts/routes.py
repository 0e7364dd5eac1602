"""Account pages (server-rendered): sign-in. Plain HTML forms with stable names and ids, so any
browser automation (including the OpenID conformance suite's) can drive them."""

from __future__ import annotations

from quart import Blueprint, Response, render_template, request

from idp.accounts.login import LoginFailure, authenticate_password
from idp.app import runtime
from idp.events import LoginSucceeded
from idp.web import csrf_token, current_session, local_path, require_csrf, see_other, session_cookie_name, set_cookie

blueprint = Blueprint("accounts", __name__)


async def _login_page(*, return_to: str, email: str | None, error: str | None, status: int) -> Response:
    html = await render_template(
        "accounts/login.html", csrf_token=csrf_token(), return_to=return_to, email=email, error=error
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
        user = await authenticate_password(rt.db, rt.passwords, rt.events, email, password)
    except LoginFailure as failure:
        return await _login_page(return_to=return_to, email=email[:320], error=failure.message, status=401)
    previous = await current_session()
    if previous is not None:
        # ASVS 7.2.4: a new session id at every sign-in; the old session ends.
        await rt.sessions.end(previous)
    cookie_value, session = await rt.sessions.create(
        user.id, amr=["pwd"], ip=request.remote_addr, user_agent=request.headers.get("User-Agent")
    )
    await rt.events.publish(LoginSucceeded(user_id=user.id, sid=session.sid, amr=tuple(session.amr)))
    response = see_other(return_to)
    set_cookie(response, session_cookie_name(), cookie_value, max_age=rt.settings.sessions.absolute_ttl)
    return response


@blueprint.get("/account/apps")
async def connected_apps() -> Response:
    """Applications the user has allowed, with what they may access (ASVS 10.7.3)."""
    from idp.accounts import consents

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
    from idp.accounts import consents
    from idp.errors import NotFound

    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/apps")
    await require_csrf()
    rt = runtime()
    if not await consents.withdraw_and_announce(rt.db, rt.events, session.user_id, client_id):
        raise NotFound("This application has no access to withdraw.")
    return see_other("/account/apps?withdrawn=1")
