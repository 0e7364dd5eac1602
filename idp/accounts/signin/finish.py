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
from idp.accounts.signin.password import PasswordChecked, record_sign_in
from idp.errors import Conflict
from idp.events import LoginSucceeded, NewDeviceSignIn, Transaction
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
    ctx: AccountContext,
    user: User,
    proved: Authentication,
    *,
    previous: BrowserSession | None,
    browser: Browser,
    password: PasswordChecked | None = None,
) -> SignedIn:
    """Sign ``browser`` in as ``user``, with what the sign-in ``proved``, under a new cookie value
    (ASVS 7.2.4). The same user signing in again keeps the session's sid; another user's session
    in this browser (``previous``) ends. The session limit applies (SessionLimitReached when it
    refuses); the browser is remembered as one of the user's devices (a new one is announced);
    LoginSucceeded is published. The caller has applied can_sign_in.

    The database writes are one unit of work, after the session is stored: the device, the audit
    rows (LoginSucceeded, NewDeviceSignIn) and the new device's notice in the outbox, and what the
    ``password`` check learnt (the sign-in time, an upgraded hash)."""
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
            if password is not None:  # the password was right all the same
                async with ctx.db.session() as db_session:
                    await record_sign_in(db_session, password)
            raise SessionLimitReached(
                f"You are signed in on {exc.limit} devices already, the most this site allows. Sign out on one "
                "of them (or wait until a session there expires), then sign in here again."
            ) from None
        if previous is not None:
            await ctx.sessions.end(previous, reason="signed_in_as_another_user")
    async with Transaction.open(ctx.db) as transaction:
        db_session = transaction.session
        if password is not None:
            user = await record_sign_in(db_session, password)
        else:
            user = await UserRepository(db_session).adopt(user)  # the new device's notice reads it
        known = password.device_known if password is not None else None
        seen = await devices.remember_in(db_session, user.id, browser.device_token, label=label, ip=ip, known=known)
        succeeded = LoginSucceeded(user_id=user.id, sid=session.sid, amr=tuple(session.amr))
        await ctx.events.publish(succeeded, within=transaction)
        if not seen.known and not seen.first:
            await ctx.events.publish(NewDeviceSignIn(user_id=user.id, device=label), within=transaction)
    return SignedIn(session=session, session_cookie=cookie_value, device_cookie=seen.token)


async def resume_session(ctx: AccountContext, cookie_value: str | None) -> BrowserSession | None:
    """The live session ``cookie_value`` names, while its account may sign in. A session of an
    account disabled or deleted meanwhile ends here: an administrator's change may have reached only
    the database (e.g. from the CLI while the sessions live in this process's memory)."""
    session = await ctx.sessions.load(cookie_value)
    return await _while_allowed(ctx, session) if session is not None else None


async def previous_session(ctx: AccountContext, cookie_value: str | None, user: User) -> BrowserSession | None:
    """The browser's session as a sign-in as ``user`` finds it (:func:`resume_session`), without
    reading the account again when the session is ``user``'s own: it just proved itself and passed
    can_sign_in."""
    session = await ctx.sessions.load(cookie_value)
    if session is None or session.user_id == user.id:
        return session
    return await _while_allowed(ctx, session)


async def _while_allowed(ctx: AccountContext, session: BrowserSession) -> BrowserSession | None:
    async with ctx.db.session() as db_session:
        user = await UserRepository(db_session).get(session.user_id)
    if user is None or not can_sign_in(user):
        await ctx.sessions.end(session, reason="account_disabled")
        return None
    return session
