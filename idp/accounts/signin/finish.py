"""Finishing a sign-in, whatever proved the user: the browser session it makes, and each later
request's check that the session's account may still sign in.

Every way of signing in ends in :func:`start_session` (the password alone, the second factor after
it, a passkey alone, the confirmation link opened in the browser that registered), as every
interaction of node-oidc-provider ends in one loadAccount; each path has applied
:func:`~idp.accounts.signin.eligibility.can_sign_in` first and answers a refusal its own way.
Plain arguments in; the web layer sets the cookie values returned (idp.web.start_browser_session).
"""

from __future__ import annotations

from dataclasses import dataclass

from idp.accounts.context import AccountContext
from idp.accounts.sessions import devices
from idp.accounts.sessions.store import BrowserSession, TooManySessions
from idp.accounts.signin.authn import Authentication
from idp.accounts.signin.eligibility import can_sign_in
from idp.errors import Conflict
from idp.events import LoginSucceeded, NewDeviceSignIn
from idp.storage.models import User
from idp.storage.repositories import UserRepository


@dataclass(frozen=True)
class Browser:
    """The browser signing in, as the request shows it."""

    ip: str | None
    user_agent: str | None
    device_token: str | None  # its device cookie (idp.accounts.sessions.devices)


@dataclass(frozen=True)
class SignedIn:
    """A new session, and the cookies the browser is to keep."""

    session: BrowserSession
    session_cookie: str  # the new value of the session cookie
    device_cookie: str  # the value of the device cookie, set again (it may be new)


class SessionLimitReached(Conflict):
    error = "session_limit"


async def start_session(
    ctx: AccountContext, user: User, proved: Authentication, *, previous: BrowserSession | None, browser: Browser
) -> SignedIn:
    """Sign ``browser`` in as ``user``, with what the sign-in ``proved``, under a new cookie value
    (ASVS 7.2.4). The same user signing in again keeps the session's sid; another user's session
    in this browser (``previous``) ends. The session limit applies (SessionLimitReached when it
    refuses); the browser is remembered as one of the user's devices (a new one is announced);
    LoginSucceeded is published. The caller has applied can_sign_in."""
    if not can_sign_in(user):
        raise ValueError("start_session for an account that may not sign in")
    ip, user_agent, label = browser.ip, browser.user_agent, devices.device_label(browser.user_agent)
    if previous is not None and previous.user_id == user.id:
        cookie_value, session = await ctx.sessions.reauthenticate(
            previous, amr=proved.amr, acr=proved.acr, ip=ip, user_agent=user_agent, device=label
        )
    else:
        try:
            cookie_value, session = await ctx.sessions.create(
                user.id, amr=proved.amr, acr=proved.acr, ip=ip, user_agent=user_agent, device=label
            )
        except TooManySessions as exc:
            raise SessionLimitReached(
                f"You are signed in on {exc.limit} devices already, the most this site allows. Sign out on one "
                "of them (or wait until a session there expires), then sign in here again."
            ) from None
        if previous is not None:
            await ctx.sessions.end(previous, reason="signed_in_as_another_user")
    seen = await devices.remember(ctx.db, user.id, browser.device_token, label=label, ip=ip)
    await ctx.events.publish(LoginSucceeded(user_id=user.id, sid=session.sid, amr=tuple(session.amr)))
    if not seen.known and not seen.first:
        await ctx.events.publish(NewDeviceSignIn(user_id=user.id, device=label))
    return SignedIn(session=session, session_cookie=cookie_value, device_cookie=seen.token)


async def resume_session(ctx: AccountContext, cookie_value: str | None) -> BrowserSession | None:
    """The live session ``cookie_value`` names, while its account may sign in. A session of an
    account disabled or deleted meanwhile ends here: an administrator's change may have reached only
    the database (e.g. from the CLI while the sessions live in this process's memory)."""
    session = await ctx.sessions.load(cookie_value)
    if session is None:
        return None
    async with ctx.db.session() as db_session:
        user = await UserRepository(db_session).get(session.user_id)
    if user is None or not can_sign_in(user):
        await ctx.sessions.end(session, reason="account_disabled")
        return None
    return session
