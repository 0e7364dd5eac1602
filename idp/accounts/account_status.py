"""What an administrator does to an account's ability to sign in: disable and enable it, end its
sessions, lift a sign-in lock. The admin pages and API call these, as the CLI does now."""

from __future__ import annotations

from idp.accounts.context import AccountContext
from idp.accounts.users import AccountError, normalize_email
from idp.events import AccountDisabled, AccountEnabled, AccountUnlocked
from idp.security.lockout import LoginGuard
from idp.security.ratelimit import RateLimiter
from idp.storage.models import User
from idp.storage.repositories import LastAdministrator, UserRepository

# At least one administrator must remain able to sign in.
LAST_ADMINISTRATOR = "this is the last enabled administrator: make another account an administrator first"


async def find_user(ctx: AccountContext, email: str) -> User:
    async with ctx.db.session() as session:
        user = await UserRepository(session).get_by_email_normalized(normalize_email(email))
    if user is None:
        raise AccountError("email", f"there is no account with the address {email.strip()[:320]!r}")
    return user


async def disable(ctx: AccountContext, user_id: str) -> int:
    """The account can't sign in or use its tokens any more: every session ends (relying parties
    are told by back-channel logout) and, through AccountDisabled, its grants are revoked.
    Returns how many sessions ended. Raises AccountError("account", …), changing nothing, for the
    last enabled administrator."""
    try:
        async with ctx.db.session() as session:
            # Committed first, so a sign-in or token request racing with this finds a disabled account.
            await UserRepository(session).change_unless_last_admin(user_id, disabled=True)
    except LastAdministrator:
        raise AccountError("account", LAST_ADMINISTRATOR) from None
    ended = await ctx.sessions.end_all_for_user(user_id, reason="account_disabled")
    await ctx.events.publish(AccountDisabled(user_id=user_id, sessions_ended=len(ended)))
    return len(ended)


async def enable(ctx: AccountContext, user_id: str) -> None:
    async with ctx.db.session() as session:
        await UserRepository(session).set_disabled(user_id, False)
    await ctx.events.publish(AccountEnabled(user_id=user_id))


async def end_sessions(ctx: AccountContext, user_id: str, sid: str | None = None) -> int:
    """End one session of the user (``sid``) or all of them; how many ended."""
    if sid is not None:
        return int(await ctx.sessions.end_by_sid(user_id, sid, reason="ended_by_admin"))
    return len(await ctx.sessions.end_all_for_user(user_id, reason="ended_by_admin"))


async def unlock(ctx: AccountContext, guard: LoginGuard, limits: RateLimiter, user: User) -> bool:
    """Lift every sign-in lock, failure count and per-account sign-in limit of the account; False
    when there was nothing to lift."""
    await limits.reset("login_per_account", user.email_normalized)
    if not await guard.unlock(user.email_normalized):
        return False
    await ctx.events.publish(AccountUnlocked(user_id=user.id, reason="admin"))
    return True
