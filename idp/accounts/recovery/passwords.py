"""Passwords: a reset link for a forgotten one, the reset itself, and a change by the signed-in user.

No answer reveals whether an address has an account (ASVS 6.3.8): a reset request for an unknown
address does nothing visible. Every change of password ends sessions and is announced, so the
protocol side revokes tokens and the user is notified.
"""

from __future__ import annotations

from dataclasses import dataclass

from idp.accounts import links
from idp.accounts.context import AccountContext, context_from, context_payload
from idp.accounts.security.mfa import has_second_factor
from idp.accounts.sessions.store import BrowserSession
from idp.accounts.signin.password import reauthenticate
from idp.accounts.users import AccountError, check_email, check_new_password, normalize_email
from idp.events import PasswordChanged, PasswordResetCompleted, PasswordResetRequested
from idp.outbox import AfterCommit, Payload
from idp.storage.models import utcnow
from idp.storage.repositories import UserRepository
from idp.storage.repositories.outbox import DbSession

# -- judging a candidate, as the forms do while the user types --------------------------------


@dataclass(frozen=True)
class PasswordVerdict:
    acceptable: bool
    rule: str | None = None  # the policy's stable id of the rule broken (too_short, common, ...)
    message: str | None = None


async def judge_password(
    ctx: AccountContext,
    password: str,
    *,
    email: str | None = None,
    name: str | None = None,
    user_id: str | None = None,
    reset_token: str | None = None,
) -> PasswordVerdict:
    """What the form's submission would say of ``password``, without submitting it: the same
    check, against the signed-in user (``user_id``) or the reset link's (``reset_token``) when
    there is one, else the ``email`` and ``name`` typed on the sign-up form. The candidate is
    neither stored nor logged."""
    owner_id = user_id
    if owner_id is None and reset_token:
        row = await links.peek(ctx.db, links.RESET_PASSWORD, reset_token)
        owner_id = row.user_id if row is not None else None
    second_factor = False
    if owner_id is not None:
        async with ctx.db.session() as session:
            owner = await UserRepository(session).get(owner_id)
        if owner is not None:
            email, name = owner.email, owner.name
            second_factor = await has_second_factor(ctx.db, owner.id)
    try:
        await check_new_password(ctx.policy, password, email=email, name=name, has_second_factor=second_factor)
    except AccountError as exc:
        return PasswordVerdict(False, getattr(exc, "rule", None), exc.message)
    return PasswordVerdict(True)


# -- password reset -------------------------------------------------------------------------


RESET_REQUEST = "password_reset_request"  # the outbox kind of a reset asked for an address


async def request_password_reset(ctx: AccountContext, email: str) -> None:
    """Record a request for a reset link, durably, before the caller answers: the same work for
    every address (ASVS 6.3.8). The outbox's worker resolves it (``ResetRequests``): a link and its
    mail if the address has an active account. Raises DatabaseUnavailable when it can't be
    recorded, so the caller says so (503) instead of "check your email"."""
    try:
        address = check_email(email)
    except AccountError:
        return  # no address could have an account: nothing to record (the answer is the same)
    await ctx.outbox.send(RESET_REQUEST, {"email": address, "context": context_payload()})


async def send_password_reset(ctx: AccountContext, email: str) -> bool:
    """A reset link and its mail now, in one transaction, for a caller who may know whether the
    address has an account (an administrator); returns whether one was queued."""
    async with ctx.db.session() as session:
        announce = await ResetRequests(ctx).resolve(session, {"email": email, "context": context_payload()})
    if announce is None:
        return False
    await announce()
    return True


class ResetRequests:
    """The outbox resolver of reset requests: in one transaction (which also marks the request
    done) the account is looked up, and for an active one the link is issued and its mail queued."""

    def __init__(self, ctx: AccountContext) -> None:
        self._ctx = ctx

    async def resolve(self, session: DbSession, payload: Payload) -> AfterCommit | None:
        ctx = self._ctx
        address = payload.get("email")
        if not isinstance(address, str):
            return None
        user = await UserRepository(session).get_by_email_normalized(normalize_email(address))
        if user is None or user.disabled:
            return None
        token = await links.issue(
            ctx.db,
            purpose=links.RESET_PASSWORD,
            user_id=user.id,
            ttl=ctx.settings.reset_ttl,
            email=user.email,
            session=session,
        )
        await ctx.send(
            "password_reset",
            user.email,
            session=session,
            link=ctx.link("/reset-password", token=token),
            minutes=max(1, ctx.settings.reset_ttl // 60),
        )
        user_id, context = user.id, context_from(payload)

        async def announce() -> None:
            await ctx.events.publish(PasswordResetRequested(user_id=user_id), context)

        return announce


async def reset_password(ctx: AccountContext, token: str | None, new_password: str, *, ip: str | None) -> str:
    """Set a new password from a reset link. Ends every session; returns the user id.

    Raises AccountError("token", …) for an invalid/expired/used link, ("password", …) for a
    password the policy refuses (the link stays usable then).
    """
    row = await links.peek(ctx.db, links.RESET_PASSWORD, token)
    if row is None:
        raise AccountError("token", "This reset link is invalid, expired or already used. Ask for a new one.")
    async with ctx.db.session() as session:
        user = await UserRepository(session).get(row.user_id)
    if user is None or user.disabled:
        raise AccountError("token", "This reset link is invalid, expired or already used. Ask for a new one.")
    # NIST SP 800-63B §3.1.1.2: a password that is one of two factors may be shorter.
    second_factor = await has_second_factor(ctx.db, user.id)
    await check_new_password(
        ctx.policy, new_password, email=user.email, name=user.name, has_second_factor=second_factor
    )
    if await links.consume(ctx.db, links.RESET_PASSWORD, token) is None:
        raise AccountError("token", "This reset link is invalid, expired or already used. Ask for a new one.")
    new_hash = await ctx.hasher.hash(new_password)
    async with ctx.db.session() as session:
        fresh = await UserRepository(session).get(row.user_id)
        if fresh is None:
            raise AccountError("token", "This account no longer exists.")
        fresh.password_hash = new_hash
        fresh.password_changed_at = utcnow()
        fresh.email_verified = True  # following the emailed link proved control of the mailbox
        await _mail_password_changed(ctx, session, fresh.email, ip)
    ended = await ctx.sessions.end_all_for_user(row.user_id, reason="password_reset")
    await ctx.events.publish(PasswordResetCompleted(user_id=row.user_id, sessions_ended=len(ended)))
    return row.user_id


async def _mail_password_changed(ctx: AccountContext, session: DbSession, email: str, ip: str | None) -> None:
    """The notice of a new password, queued with the change itself (ASVS 6.3.7)."""
    await ctx.send(
        "password_changed",
        email,
        session=session,
        time=utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        ip=ip or "unknown",
        reset_link=ctx.link("/forgot-password"),
    )


# -- password change ------------------------------------------------------------------------


async def change_password(
    ctx: AccountContext,
    user_id: str,
    current_password: str,
    new_password: str,
    *,
    keep: BrowserSession | None,
    ip: str | None,
    device_token: str | None = None,
) -> int:
    """Change the user's password (ASVS 6.2.3: current and new). Ends the user's other sessions
    (ASVS 7.4.3: every one but ``keep``, the session the change was made from) and returns how
    many ended.

    The current password is checked as a sign-in attempt from ``ip`` (``device_token``: the
    browser's device cookie), see idp.accounts.signin.password.reauthenticate: PasswordCheckRefused when
    there were too many."""
    user = await reauthenticate(
        ctx.sign_in,
        user_id,
        current_password,
        ip=ip or "unknown",
        device_token=device_token,
        field="current_password",
    )
    if new_password == current_password:
        raise AccountError("new_password", "The new password must differ from the current one.")
    second_factor = await has_second_factor(ctx.db, user.id)
    await check_new_password(
        ctx.policy,
        new_password,
        email=user.email,
        name=user.name,
        field="new_password",
        has_second_factor=second_factor,
    )
    new_hash = await ctx.hasher.hash(new_password)
    async with ctx.db.session() as db_session:
        fresh = await UserRepository(db_session).get(user_id)
        if fresh is not None:
            fresh.password_hash = new_hash
            fresh.password_changed_at = utcnow()
            await _mail_password_changed(ctx, db_session, fresh.email, ip)
    kept = keep.digest if keep is not None and keep.user_id == user_id else None
    ended = await ctx.sessions.end_all_for_user(user_id, keep=kept, reason="password_changed")
    await ctx.events.publish(PasswordChanged(user_id=user_id, sessions_ended=len(ended)))
    return len(ended)
