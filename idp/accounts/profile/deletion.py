"""Account deletion: the user's own (re-authenticated) or, later, an administrator's.

Everything the account owns is purged: its rows go with the ``users`` row (every user-owned table
references it ``ON DELETE CASCADE``), its browser sessions are ended, and every token issued to
relying parties stops working at once (ASVS 7.4.2). The audit trail keeps its events and the
opaque ids but loses the personal data in them (IP address, user agent, the address in details).

The protocol side learns of the deletion through ``AccountDeleting``, published while the rows it
needs still exist; its subscribers (``idp.runtime``) revoke every grant, which denylists the
access tokens, and send back-channel logout for each ended session.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from idp.accounts.context import AccountContext
from idp.accounts.signin.password import reauthenticate
from idp.accounts.users import AccountError
from idp.events import AccountDeleted, AccountDeleting, get_context
from idp.storage.models import User
from idp.storage.repositories import AccountPurge, LinkRepository, UserRepository

log = logging.getLogger("idp.accounts")

# Keys of audit details that hold personal data whatever their value.
_PERSONAL_KEYS = frozenset(
    {
        "email",
        "new_email",
        "old_email",
        "name",
        "given_name",
        "family_name",
        "preferred_username",
        "picture",
        "ip",
        "user_agent",
        "phone_number",
        "address",
        "device_label",
    }
)
_DROP = object()


@dataclass(frozen=True)
class DeletionReport:
    user_id: str
    sessions_ended: int
    # Rows per table, counted in the transaction that deleted them; "users" is always 1.
    rows_deleted: dict[str, int]
    audit_rows_scrubbed: int = 0


async def delete_account(
    ctx: AccountContext,
    user_id: str,
    *,
    password: str | None,
    confirm_with_password: bool = True,
    ip: str | None = None,
    device_token: str | None = None,
    actor_id: str | None = None,
    delete_blob: Callable[[str], Awaitable[None]] | None = None,
) -> DeletionReport:
    """Delete an account and everything it owns.

    ``confirm_with_password``: the user deletes their own account and must give the password
    again (re-authentication before an irreversible action), checked as a sign-in attempt from
    ``ip`` with the browser's ``device_token`` (idp.accounts.signin.password.reauthenticate: the same limits
    and lockout; PasswordCheckRefused when there were too many). Administrators' deletions
    pass ``confirm_with_password=False`` and their own id as ``actor_id``, which the audit trail
    records. ``delete_blob`` removes the stored picture files by name (the routes pass
    ``Runtime.delete_picture``, which deletes every stored size).

    Raises AccountError("password", …) for a missing or wrong password and ("account", …) for an
    account that doesn't exist (or, for self-service, is disabled); nothing changes then.
    """
    async with ctx.db.session() as session:
        user = await UserRepository(session).get(user_id)
    if user is None:
        raise AccountError("account", "This account does not exist.")
    if confirm_with_password:
        if user.disabled:
            raise AccountError("account", "Your account is not available.")
        if user.password_hash is None:
            # Accounts without a password will confirm with a second factor once MFA arrives;
            # until then they can't delete themselves (an administrator can).
            raise AccountError("password", "This account has no password to confirm the deletion with.")
        await reauthenticate(ctx.sign_in, user_id, password or "", ip=ip or "unknown", device_token=device_token)

    context = replace(get_context(), actor_id=actor_id) if actor_id is not None else None
    emails = await _addresses_of(ctx, user)
    await _disable(ctx, user_id)
    ended = await ctx.sessions.end_all_for_user(user_id, reason="account_deleted")
    await ctx.events.publish(
        AccountDeleting(user_id=user_id, sessions=tuple((s.sid, tuple(s.clients)) for s in ended)), context
    )
    rows_deleted = await _delete_rows(ctx, user_id)
    await ctx.events.publish(AccountDeleted(user_id=user_id), context)
    # Last, so the rows the deletion itself just wrote lose the request's IP and user agent too.
    scrubbed = await _scrub_audit_trail(ctx, user_id, emails)
    if delete_blob is not None and user.picture and not _is_absolute_url(user.picture):
        try:
            await delete_blob(user.picture)
        except Exception as exc:  # the account is gone already; an orphaned file is swept later
            log.error("could not delete the picture of a deleted account", extra={"error": type(exc).__name__})
    if user.email_verified:
        # Only a verified address is known to be the owner's (an unverified one may belong to
        # someone whose address was used to sign up).
        await ctx.send("account_deleted", user.email)
    return DeletionReport(
        user_id=user_id, sessions_ended=len(ended), rows_deleted=rows_deleted, audit_rows_scrubbed=scrubbed
    )


async def _addresses_of(ctx: AccountContext, user: User) -> set[str]:
    """Every address of the user the audit trail could mention, including pending changes."""
    addresses = {user.email.casefold(), user.email_normalized.casefold()}
    async with ctx.db.session() as session:
        addresses |= {email.casefold() for email in await LinkRepository(session).addresses_of(user.id)}
    return addresses


async def _disable(ctx: AccountContext, user_id: str) -> None:
    # Committed before sessions end and grants are revoked: a sign-in or token request racing
    # with the deletion finds a disabled account instead of issuing something after revocation.
    async with ctx.db.session() as session:
        await UserRepository(session).set_disabled(user_id, True)


async def _delete_rows(ctx: AccountContext, user_id: str) -> dict[str, int]:
    async with ctx.db.session() as session:
        counts = await AccountPurge(session).delete_everything_of(user_id)
        if counts is None:
            # Deleted meanwhile by another request; this transaction rolls back.
            raise AccountError("account", "This account does not exist.")
    return counts


async def _scrub_audit_trail(ctx: AccountContext, user_id: str, emails: set[str]) -> int:
    """Keep each event, its time, outcome and opaque ids; drop the personal data (see
    AccountPurge.scrub_audit_trail for whose IP address and user agent go)."""
    async with ctx.db.session() as session:
        return await AccountPurge(session).scrub_audit_trail(user_id, lambda details: _scrub(details, emails))


def _scrub(value: Any, emails: set[str]) -> Any:
    if isinstance(value, dict):
        kept = {key: _scrub(item, emails) for key, item in value.items() if str(key).lower() not in _PERSONAL_KEYS}
        return {key: item for key, item in kept.items() if item is not _DROP}
    if isinstance(value, list):
        return [item for item in (_scrub(element, emails) for element in value) if item is not _DROP]
    if isinstance(value, str) and any(address in value.casefold() for address in emails):
        return _DROP
    return value


def _is_absolute_url(value: str) -> bool:
    # An absolute http(s) URL is a picture hosted elsewhere, not a file of ours (see oauth.claims).
    try:
        return urlsplit(value).scheme.lower() in ("http", "https")
    except ValueError:
        return False
