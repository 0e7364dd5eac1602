"""Registration: an account created by its owner, inactive until the emailed link confirms the
address.

No answer reveals whether an address has an account (ASVS 6.3.8): registering a taken address
mails its owner instead, and asking for a new link for an unknown or active address does nothing
visible.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from idp.accounts import links
from idp.accounts.context import AccountContext
from idp.accounts.users import (
    REPLACEMENT_CHARACTER,
    AccountError,
    check_email,
    check_new_password,
    new_user_row,
    normalize_email,
)
from idp.events import EmailVerified, RegistrationAttempted, UserCreated
from idp.outbox import AfterCommit, Payload
from idp.security.tokens import sha256_digest
from idp.storage.repositories import LinkRepository, UserRepository
from idp.storage.repositories.outbox import DbSession

MAX_NAME_LENGTH = 200


# Refused in names, as by the profile API: control characters (NUL, escapes, line breaks — and
# PostgreSQL can't even store a NUL), line and paragraph separators, lone surrogates; plus U+FFFD.
_NAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _unusable_characters(value: str) -> bool:
    return any(
        char == REPLACEMENT_CHARACTER or unicodedata.category(char) in _NAME_REFUSED_CATEGORIES for char in value
    )


def check_mailable_email(email: str) -> str:
    """check_email, and refuse what the mailer can't address: a verification link that can never
    be delivered would leave an account nobody can activate. Non-ASCII before the @ needs SMTPUTF8,
    which idp's mail headers don't support; international domains are fine."""
    address = check_email(email)
    if not address.rpartition("@")[0].isascii():
        raise AccountError(
            "email",
            "Addresses with characters other than ASCII letters, digits and punctuation before the @ "
            "can't receive our emails yet. Use another address.",
        )
    return address


def check_name(name: str | None) -> str | None:
    """The display name, stripped; None when empty. Raises AccountError("name", …)."""
    clean = (name or "").strip() or None
    if clean is None:
        return None
    if len(clean) > MAX_NAME_LENGTH:
        raise AccountError("name", f"The name may be at most {MAX_NAME_LENGTH} characters.")
    if _unusable_characters(clean):
        raise AccountError(
            "name", "The name contains a character that can't be used (such as a control character). Remove it."
        )
    return clean


async def register(
    ctx: AccountContext,
    *,
    email: str,
    password: str,
    name: str | None,
    return_to: str | None = None,
    browser_binding: str | None = None,
) -> None:
    """Create an inactive account and mail a verification link; or mail the owner if the address
    is taken. Raises AccountError (field, message) only for input problems.

    Both outcomes cost the same (ASVS 6.3.8, timing): the password is judged and hashed once, and
    the database decides whether the address is free, within the one transaction that would create
    the account and its link; a taken address then costs a look-up of its owner where a free one
    costs the link's row, and each publishes one event and queues one mail in that same transaction
    (the outbox sends it after the answer).
    """
    address = check_mailable_email(email)
    clean_name = check_name(name)
    await check_new_password(ctx.policy, password, email=address, name=clean_name)
    user = new_user_row(address, clean_name, await ctx.hasher.hash(password))
    token, link = links.new_link(
        purpose=links.VERIFY_EMAIL,
        user_id=user.id,
        ttl=ctx.settings.verification_ttl,
        email=user.email,
        return_to=return_to,
        browser_binding=browser_binding,
    )
    async with ctx.db.session() as session:
        users = UserRepository(session)
        created = await users.add_unless_taken(user)
        if created:
            await LinkRepository(session).add(link)
            await _mail_verification(ctx, session, token, user.email, user.name)
            existing = None
        else:
            existing = await users.get_by_email_normalized(user.email_normalized)
            if existing is not None:  # None: the account went away meanwhile; nobody to tell
                # Same answer as a fresh registration; the owner learns of the attempt (ASVS 6.3.8).
                await ctx.send(
                    "already_registered",
                    existing.email,
                    session=session,
                    login_link=ctx.link("/login"),
                    reset_link=ctx.link("/forgot-password"),
                )
    if created:
        await ctx.events.publish(UserCreated(user_id=user.id, admin=False, verified=False))
    elif existing is not None:
        await ctx.events.publish(RegistrationAttempted(user_id=existing.id))


async def _mail_verification(ctx: AccountContext, session: DbSession, token: str, email: str, name: str | None) -> None:
    await ctx.send(
        "verify_email",
        email,
        session=session,
        name=name or "",
        link=ctx.link("/verify-email", token=token),
        hours=max(1, ctx.settings.verification_ttl // 3600),
    )


RESEND_REQUEST = "verification_resend_request"  # the outbox kind of a new link asked for an address


async def resend_verification(
    ctx: AccountContext, email: str, *, return_to: str | None, browser_binding: str | None
) -> None:
    """Record a request for a new verification link, durably, before the caller answers: the same
    work for every address (ASVS 6.3.8). The outbox's worker resolves it (``ResendRequests``): a
    link and its mail only for an unverified, enabled account. Raises DatabaseUnavailable when it
    can't be recorded."""
    try:
        address = check_email(email)
    except AccountError:
        return
    await ctx.outbox.send(
        RESEND_REQUEST, {"email": address, "return_to": return_to, "browser_binding": browser_binding}
    )


class ResendRequests:
    """The outbox resolver of resend requests: the look-up, the link and its mail in one
    transaction (which also marks the request done)."""

    def __init__(self, ctx: AccountContext) -> None:
        self._ctx = ctx

    async def resolve(self, session: DbSession, payload: Payload) -> AfterCommit | None:
        ctx = self._ctx
        address, return_to, binding = (payload.get(name) for name in ("email", "return_to", "browser_binding"))
        if not isinstance(address, str):
            return None
        user = await UserRepository(session).get_by_email_normalized(normalize_email(address))
        if user is None or user.email_verified or user.disabled:
            return None
        token = await links.issue(
            ctx.db,
            purpose=links.VERIFY_EMAIL,
            user_id=user.id,
            ttl=ctx.settings.verification_ttl,
            email=user.email,
            return_to=return_to if isinstance(return_to, str) else None,
            browser_binding=binding if isinstance(binding, str) else None,
            session=session,
        )
        await _mail_verification(ctx, session, token, user.email, user.name)
        return None


@dataclass(frozen=True)
class Verified:
    user_id: str
    return_to: str | None
    same_browser: bool


async def verify_email(ctx: AccountContext, token: str | None, browser_binding: str | None) -> Verified | None:
    row = await links.consume(ctx.db, links.VERIFY_EMAIL, token)
    if row is None:
        return None
    async with ctx.db.session() as session:
        user = await UserRepository(session).get(row.user_id)
        if user is None or user.disabled or (row.email or "").lower() != user.email_normalized:
            return None  # the account changed its address since the link was sent
        user.email_verified = True
    await ctx.events.publish(EmailVerified(user_id=row.user_id))
    same_browser = bool(browser_binding and row.browser_digest and sha256_digest(browser_binding) == row.browser_digest)
    return Verified(user_id=row.user_id, return_to=row.return_to, same_browser=same_browser)
