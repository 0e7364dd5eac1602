"""The connected applications page: what each application the user allowed may access (ASVS
10.7.3), and withdrawing that consent."""

from __future__ import annotations

from quart import Response, render_template, request

from idp.accounts.apps import consents
from idp.accounts.web import account_pages, page
from idp.errors import NotFound
from idp.http import runtime
from idp.web import csrf_token, current_session, require_csrf, see_other


@account_pages.get("/account/apps")
async def connected_apps() -> Response:
    """Applications the user has allowed, with what they may access (ASVS 10.7.3)."""
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/apps")
    html = await render_template(
        "accounts/apps.html",
        apps=await consents.list_for_user(runtime().db, session.user_id),
        csrf_token=csrf_token(),
        withdrawn=request.args.get("withdrawn"),
    )
    return page(html)


@account_pages.post("/account/apps/<client_id>/withdraw")
async def withdraw_app(client_id: str) -> Response:
    """Withdraw consent: the app must ask again, and its tokens for this user stop working."""
    session = await current_session()
    if session is None:
        return see_other("/login?return_to=/account/apps")
    await require_csrf()
    rt = runtime()
    if not await consents.withdraw_and_announce(rt.db, rt.events, session.user_id, client_id):
        raise NotFound("This application has no access to withdraw.")
    return see_other("/account/apps?withdrawn=1")
