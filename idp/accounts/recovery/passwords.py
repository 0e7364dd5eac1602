"""Registration with email verification, password reset and password change.

None of these answers reveals whether an address has an account (ASVS 6.3.8): registering a
taken address mails its owner instead, and a reset request for an unknown address does nothing
visible. Every change of password ends sessions and is announced, so the protocol side revokes
tokens and the user is notified.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlencode

from idp.accounts import links
from idp.accounts.password_policy import PasswordPolicy, PasswordRejected
from idp.accounts.security.mfa import has_second_factor
from idp.accounts.sessions.store import BrowserSession, SessionStore
from idp.accounts.signin.password import PasswordSignIn, reauthenticate
from idp.accounts.users import AccountError, check_email, new_user_row
from idp.config import AccountSettings
from idp.events import (
    EmailVerified,
    EventBus,
    PasswordChanged,
    PasswordResetCompleted,
    PasswordResetRequested,
    RegistrationAttempted,
    UserCreated,
)
from idp.mail import EmailRenderer, Mailer, MailError, OutgoingEmail
from idp.security.lockout import LoginGuard
from idp.security.passwords import PasswordHasher
from idp.security.ratelimit import RateLimiter
from idp.security.tokens import sha256_digest
from idp.storage.db import Database
from idp.storage.models import utcnow
from idp.storage.repositories import UserRepository

log = logging.getLogger("idp.accounts")

# Set by deferred_mail(): AccountContext.send queues here instead of delivering.
_deferred_mail: ContextVar[list[OutgoingEmail] | None] = ContextVar("idp_deferred_mail", default=None)


@contextmanager
def deferred_mail() -> Iterator[list[OutgoingEmail]]:
    """Collect what ``AccountContext.send`` renders inside the block instead of sending it.

    The caller answers first and delivers afterwards (``deliver``): an SMTP round trip made only
    when an address has an account would otherwise show in the response time (ASVS 6.3.8).
    """
    outbox: list[OutgoingEmail] = []
    token = _deferred_mail.set(outbox)
    try:
        yield outbox
    finally:
        _deferred_mail.reset(token)


async def in_background(job: Awaitable[object]) -> None:
    """Await work nobody waits for (run after the answer was sent). A failure is logged with its
    type only: a message or traceback could hold an address or SQL."""
    try:
        await job
    except Exception as exc:
        log.error("background task failed", extra={"error": type(exc).__name__})


@dataclass
class AccountContext:
    db: Database
    hasher: PasswordHasher
    policy: PasswordPolicy
    mailer: Mailer
    emails: EmailRenderer
    events: EventBus
    sessions: SessionStore
    settings: AccountSettings
    issuer: str
    limits: RateLimiter
    lockout: LoginGuard

    @property
    def sign_in(self) -> PasswordSignIn:
        """What a password attempt needs: sign-in and every re-check count the same way."""
        return PasswordSignIn(self.db, self.hasher, self.events, self.limits, self.lockout)

    def link(self, path: str, **params: str) -> str:
        return f"{self.issuer}{path}?{urlencode(params)}" if params else f"{self.issuer}{path}"

    async def send(self, template: str, to: str, **context: object) -> None:
        """Mail failures are logged, never shown: the answer must not depend on them (nor on
        whether the address exists, ASVS 6.3.8)."""
        try:
            message = self.emails.render(template, to=to, **context)
        except ValueError:
            # An address the mail headers can't carry (e.g. non-ASCII before the @ on an account
            # created before registration refused those). The message names no address.
            log.error("could not send email", extra={"template": template, "error": "address cannot be mailed"})
            return
        outbox = _deferred_mail.get()
        if outbox is not None:
            outbox.append(message)
            return
        await self.deliver(message)

    async def deliver(self, *messages: OutgoingEmail) -> None:
        """Send rendered messages; failures are logged (template and error only, no address)."""
        for message in messages:
            try:
                await self.mailer.send(message)
            except MailError as exc:
                log.error("could not send email", extra={"template": message.template, "error": str(exc)})


def _password_error(exc: PasswordRejected, field: str = "password") -> AccountError:
    error = AccountError(field, exc.message)
    error.rule = exc.rule  # type: ignore[attr-defined]
    return error


MAX_NAME_LENGTH = 200
# What a form decoder puts in place of bytes that were not UTF-8 (Quart decodes with "replace").
_REPLACEMENT_CHARACTER = "\ufffd"


# Refused in names, as by the profile API: control characters (NUL, escapes, line breaks — and
# PostgreSQL can't even store a NUL), line and paragraph separators, lone surrogates; plus U+FFFD.
_NAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _unusable_characters(value: str) -> bool:
    return any(
        char == _REPLACEMENT_CHARACTER or unicodedata.category(char) in _NAME_REFUSED_CATEGORIES for char in value
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


def _check_new_password(
    ctx: AccountContext,
    password: str,
    *,
    email: str | None,
    name: str | None,
    field: str = "password",
    has_second_factor: bool = False,
) -> None:
    """The policy's verdict, plus one thing the policy can't see: a password that arrived as
    invalid UTF-8 was decoded lossily (U+FFFD), and hashing that would let other byte strings
    match it (ASVS 6.2.8: verified exactly as received)."""
    if _REPLACEMENT_CHARACTER in password:
        error = AccountError(
            field,
            "Your password contains a character that could not be read (U+FFFD, or text not sent as UTF-8). "
            "Remove it and try again.",
        )
        error.rule = "invalid"  # type: ignore[attr-defined]
        raise error
    try:
        ctx.policy.check(password, email=email, name=name, has_second_factor=has_second_factor)
    except PasswordRejected as exc:
        raise _password_error(exc, field) from None


# -- registration ---------------------------------------------------------------------------


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
    costs the link's row, and each publishes one event and renders one mail (sent after the answer
    when the caller defers mail, as the registration form does).
    """
    address = check_mailable_email(email)
    clean_name = check_name(name)
    _check_new_password(ctx, password, email=address, name=clean_name)
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
            session.add(link)
            existing = None
        else:
            existing = await users.get_by_email(address)
    if created:
        await ctx.events.publish(UserCreated(user_id=user.id, admin=False, verified=False))
        await _mail_verification(ctx, token, user.email, user.name)
    elif existing is not None:  # None: the account went away meanwhile; nobody to tell
        # Same answer as a fresh registration; the owner learns of the attempt (ASVS 6.3.8).
        await ctx.events.publish(RegistrationAttempted(user_id=existing.id))
        await ctx.send(
            "already_registered",
            existing.email,
            login_link=ctx.link("/login"),
            reset_link=ctx.link("/forgot-password"),
        )


async def send_verification(
    ctx: AccountContext,
    user_id: str,
    email: str,
    name: str | None,
    *,
    return_to: str | None,
    browser_binding: str | None,
) -> None:
    token = await links.issue(
        ctx.db,
        purpose=links.VERIFY_EMAIL,
        user_id=user_id,
        ttl=ctx.settings.verification_ttl,
        email=email,
        return_to=return_to,
        browser_binding=browser_binding,
    )
    await _mail_verification(ctx, token, email, name)


async def _mail_verification(ctx: AccountContext, token: str, email: str, name: str | None) -> None:
    await ctx.send(
        "verify_email",
        email,
        name=name or "",
        link=ctx.link("/verify-email", token=token),
        hours=max(1, ctx.settings.verification_ttl // 3600),
    )


async def resend_verification(
    ctx: AccountContext, email: str, *, return_to: str | None, browser_binding: str | None
) -> None:
    """Silently does nothing unless the address belongs to an unverified account."""
    try:
        address = check_email(email)
    except AccountError:
        return
    async with ctx.db.session() as session:
        user = await UserRepository(session).get_by_email(address)
    if user is not None and not user.email_verified and not user.disabled:
        await send_verification(
            ctx, user.id, user.email, user.name, return_to=return_to, browser_binding=browser_binding
        )


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


# -- password reset -------------------------------------------------------------------------


async def request_password_reset(ctx: AccountContext, email: str) -> None:
    """Mail a reset link if the address has an active account; the caller always shows the same page."""
    try:
        address = check_email(email)
    except AccountError:
        return
    async with ctx.db.session() as session:
        user = await UserRepository(session).get_by_email(address)
    if user is None or user.disabled:
        return
    token = await links.issue(
        ctx.db, purpose=links.RESET_PASSWORD, user_id=user.id, ttl=ctx.settings.reset_ttl, email=user.email
    )
    await ctx.events.publish(PasswordResetRequested(user_id=user.id))
    await ctx.send(
        "password_reset",
        user.email,
        link=ctx.link("/reset-password", token=token),
        minutes=max(1, ctx.settings.reset_ttl // 60),
    )


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
    _check_new_password(ctx, new_password, email=user.email, name=user.name, has_second_factor=second_factor)
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
        email = fresh.email
    ended = await ctx.sessions.end_all_for_user(row.user_id, reason="password_reset")
    await ctx.events.publish(PasswordResetCompleted(user_id=row.user_id, sessions_ended=len(ended)))
    await ctx.send(
        "password_changed",
        email,
        time=utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        ip=ip or "unknown",
        reset_link=ctx.link("/forgot-password"),
    )
    return row.user_id


# -- password change ------------------------------------------------------------------------


async def change_password(
    ctx: AccountContext,
    session: BrowserSession,
    current_password: str,
    new_password: str,
    *,
    ip: str | None,
    device_token: str | None = None,
) -> int:
    """Change the signed-in user's password (ASVS 6.2.3: current and new). Ends the user's other
    sessions (ASVS 7.4.3) and returns how many ended.

    The current password is checked as a sign-in attempt from ``ip`` (``device_token``: the
    browser's device cookie), see idp.accounts.signin.password.reauthenticate: PasswordCheckRefused when
    there were too many."""
    user = await reauthenticate(
        ctx.sign_in,
        session.user_id,
        current_password,
        ip=ip or "unknown",
        device_token=device_token,
        field="current_password",
    )
    if new_password == current_password:
        raise AccountError("new_password", "The new password must differ from the current one.")
    second_factor = await has_second_factor(ctx.db, user.id)
    _check_new_password(
        ctx, new_password, email=user.email, name=user.name, field="new_password", has_second_factor=second_factor
    )
    new_hash = await ctx.hasher.hash(new_password)
    async with ctx.db.session() as db_session:
        fresh = await UserRepository(db_session).get(session.user_id)
        if fresh is not None:
            fresh.password_hash = new_hash
            fresh.password_changed_at = utcnow()
    ended = await ctx.sessions.end_all_for_user(session.user_id, keep=session.digest, reason="password_changed")
    await ctx.events.publish(PasswordChanged(user_id=session.user_id, sessions_ended=len(ended)))
    await ctx.send(
        "password_changed",
        user.email,
        time=utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        ip=ip or "unknown",
        reset_link=ctx.link("/forgot-password"),
    )
    return len(ended)
