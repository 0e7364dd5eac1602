"""Administering accounts: finding them, what an administrator sees of one, and the actions only
an administrator takes (the admin role, verifying an address, resetting second factors, deleting).

One implementation for three doors: the CLI calls these now, the admin pages and the admin API
will. Actions that users and administrators share (disable, enable, end sessions, unlock) are the
accounts domain's (idp.accounts.account_status); every action publishes an event, so the audit
log has it with its actor (the event context's ``actor_id``; "via" says cli, page or api).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from idp.accounts import account_status
from idp.accounts.apps.consents import list_for_user
from idp.accounts.context import AccountContext
from idp.accounts.profile.deletion import DeletionReport, delete_account
from idp.accounts.profile.profile import activity, iso
from idp.accounts.security.mfa import factor_status
from idp.accounts.sessions.store import describe_all
from idp.accounts.users import AccountError
from idp.events import AccountLocked, AdminGranted, AdminRevoked, EmailVerified, SecondFactorsReset
from idp.storage.models import User
from idp.storage.repositories import (
    AuditFilter,
    AuditRepository,
    LastAdministrator,
    MfaRepository,
    RecoveryCodeRepository,
    UserRepository,
)

STATUSES = ("active", "unverified", "disabled", "locked")
DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_QUERY = 320
# Locks started within one lock's duration that the "locked" filter looks at (a flood of more
# is an attack the dashboard shows anyway).
MAX_LOCK_CANDIDATES = 1000
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}")


# -- finding accounts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserQuery:
    """A search of the accounts; every field optional. ``cursor`` is the ``next_cursor`` of the
    page before (opaque; stable while accounts are added or changed)."""

    text: str | None = None
    status: str | None = None
    admin: bool | None = None
    second_factor: bool | None = None
    cursor: str | None = None
    limit: int = DEFAULT_PAGE


@dataclass(frozen=True)
class UserPage:
    users: list[dict[str, Any]]
    next_cursor: str | None


def summary(user: User) -> dict[str, Any]:
    """One account in a list: who it is and whether it can sign in."""
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "email_verified": bool(user.email_verified),
        "disabled": bool(user.disabled),
        "is_admin": bool(user.is_admin),
        "created_at": iso(user.created_at),
        "last_login_at": iso(user.last_login_at),
    }


def _encode_cursor(user: User) -> str:
    raw = f"{user.created_at.isoformat()}|{user.id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    problem = AccountError("cursor", "is not a cursor from this list (use next_cursor as given)")
    if not _CURSOR.fullmatch(cursor):
        raise problem
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, _, user_id = raw.partition("|")
        position = datetime.fromisoformat(created_at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise problem from None
    if not user_id or position.tzinfo is None:
        raise problem
    return position, user_id


def check_query(query: UserQuery) -> tuple[datetime, str] | None:
    """The query's position, after checking each field; AccountError names the first bad one."""
    if query.text is not None and len(query.text) > MAX_QUERY:
        raise AccountError("query", f"must be at most {MAX_QUERY} characters")
    if query.status is not None and query.status not in STATUSES:
        raise AccountError("status", f"must be one of {', '.join(STATUSES)}")
    if not 1 <= query.limit <= MAX_PAGE:
        raise AccountError("limit", f"must be an integer from 1 to {MAX_PAGE}")
    return _decode_cursor(query.cursor) if query.cursor is not None else None


async def locked_accounts(ctx: AccountContext) -> set[str]:
    """Ids of the accounts under an account-wide sign-in lock now. The locks live in the key-value
    store under a digest of the address, so the candidates come from the audit log (every lock
    started there within a lock's duration) and each is checked against the lock itself."""
    since = datetime.now(UTC) - timedelta(seconds=ctx.lockout.spec.lock_duration + 1)
    async with ctx.db.session() as session:
        started = await AuditRepository(session).newest(
            AuditFilter(event=AccountLocked.name, since=since), limit=MAX_LOCK_CANDIDATES
        )
        candidates = {event.subject_id for event in started if event.subject_id}
        users = await UserRepository(session).search(among=candidates, limit=MAX_LOCK_CANDIDATES)
    return {user.id for user in users if await ctx.lockout.locked_for(user.email_normalized)}


async def find_users(ctx: AccountContext, query: UserQuery) -> UserPage:
    after = check_query(query)
    among = await locked_accounts(ctx) if query.status == "locked" else None
    async with ctx.db.session() as session:
        rows = await UserRepository(session).search(
            text=(query.text or "").strip() or None,
            status=None if query.status == "locked" else query.status,
            among=among,
            admin=query.admin,
            with_second_factor=query.second_factor,
            after=after,
            limit=query.limit + 1,
        )
    page = list(rows[: query.limit])
    more = len(rows) > query.limit
    return UserPage([summary(user) for user in page], _encode_cursor(page[-1]) if more and page else None)


# -- one account ---------------------------------------------------------------------------------


async def user_detail(ctx: AccountContext, user: User, *, sessions: bool = True) -> dict[str, Any]:
    """What an administrator sees of an account: profile, status, second factors, sessions with
    their devices (``sessions=False`` when they are out of reach: kept in another process),
    consents and the latest activity."""
    factors = await factor_status(ctx.db, user.id)
    detail = {
        **summary(user),
        "given_name": user.given_name,
        "family_name": user.family_name,
        "has_password": user.password_hash is not None,
        "password_changed_at": iso(user.password_changed_at),
        "second_factors": {
            "totp": factors.totp,
            "passkeys": factors.webauthn,
            "recovery_codes_left": factors.recovery_codes,
        },
        "consents": [
            {"client_id": c.client_id, "client": c.client_name, "scopes": c.scopes, "updated_at": iso(c.updated_at)}
            for c in await list_for_user(ctx.db, user.id)
        ],
        "recent_activity": (await activity(ctx.db, user.id, limit=10)).items,
    }
    if sessions:  # the locks are kept with the sessions: out of reach alike
        detail["locked_for"] = await ctx.lockout.locked_for(user.email_normalized)
        detail["sessions"] = await describe_all(ctx.sessions, ctx.db, user.id, current_sid=None)
    return detail


# -- actions -------------------------------------------------------------------------------------


async def set_disabled(ctx: AccountContext, user: User, disabled: bool) -> bool:
    """Disable the account (its sessions end, its grants are revoked) or enable it; False when it
    was so already (nothing published). Raises AccountError for the last enabled administrator."""
    if bool(user.disabled) == disabled:
        return False
    if disabled:
        await account_status.disable(ctx, user.id)
    else:
        await account_status.enable(ctx, user.id)
    return True


async def grant_admin(ctx: AccountContext, user: User) -> bool:
    """Make the account an administrator; False when it was one already (nothing published)."""
    if user.is_admin:
        return False
    async with ctx.db.session() as session:
        await UserRepository(session).set_admin(user.id, True)
    await ctx.events.publish(AdminGranted(user_id=user.id))
    return True


async def revoke_admin(ctx: AccountContext, user: User) -> bool:
    """Take the administrator role away; False when the account had none. Raises AccountError,
    changing nothing, for the last enabled administrator."""
    if not user.is_admin:
        return False
    try:
        async with ctx.db.session() as session:
            await UserRepository(session).change_unless_last_admin(user.id, is_admin=False)
    except LastAdministrator:
        raise AccountError("account", account_status.LAST_ADMINISTRATOR) from None
    await ctx.events.publish(AdminRevoked(user_id=user.id))
    return True


async def verify_email(ctx: AccountContext, user: User) -> bool:
    """Mark the address verified (the owner proved it another way); False when it was already."""
    async with ctx.db.session() as session:
        changed = await UserRepository(session).mark_email_verified(user.id)
    if changed:
        await ctx.events.publish(EmailVerified(user_id=user.id, by_admin=True))
    return changed


async def reset_second_factors(ctx: AccountContext, user: User) -> int:
    """Remove every second factor and recovery code (a lost authenticator), so the user signs in
    with the password and enrols again; how many confirmed factors were removed. The user is
    mailed (idp.accounts.notifications), since a reset they did not ask for must stand out."""
    async with ctx.db.session() as session:
        await UserRepository(session).lock(user.id)
        removed = await MfaRepository(session).delete_every_factor(user.id)
        await RecoveryCodeRepository(session).delete_all(user.id)
    await ctx.events.publish(SecondFactorsReset(user_id=user.id, removed=removed))
    return removed


async def delete_user(
    ctx: AccountContext,
    user: User,
    *,
    actor_id: str | None,
    delete_blob: Callable[[str], Awaitable[None]] | None = None,
) -> DeletionReport:
    """Delete the account with the same full purge as the owner's own deletion (sessions ended
    with back-channel logout, grants revoked, rows deleted, audit trail scrubbed). The last
    enabled administrator is refused before anything changes."""
    if user.is_admin and not user.disabled:
        try:
            async with ctx.db.session() as session:
                await UserRepository(session).change_unless_last_admin(user.id, disabled=True)
        except LastAdministrator:
            raise AccountError("account", account_status.LAST_ADMINISTRATOR) from None
    return await delete_account(
        ctx, user.id, password=None, confirm_with_password=False, actor_id=actor_id, delete_blob=delete_blob
    )
