"""Password sign-in: the same answer and the same cost whether or not the account exists.

Before the password is checked, the attempt passes the rate limits (per IP, per account) and the
brute-force guard (progressive delay and lockout, idp.security.lockout); a wrong password feeds
the guard, and a lock it switches on is published (the owner is mailed).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from idp.events import AccountLocked, EventBus, LoginFailed
from idp.security.lockout import LockedOut, LoginGuard
from idp.security.passwords import PasswordHasher
from idp.security.ratelimit import RateLimited, RateLimiter
from idp.security.tokens import sha256_digest
from idp.storage.db import Database
from idp.storage.models import KnownDevice, User, utcnow
from idp.storage.repositories import UserRepository, normalize_email

MAX_EMAIL_LENGTH = 320
MAX_PASSWORD_INPUT = 1024  # refuse absurd inputs before hashing (argon2 cost is per byte, too)


class LoginFailure(Exception):
    """``reason`` is for the audit log; ``message`` is what the user sees (never says which part was
    wrong). ``retry_after`` (seconds) is set when the attempt was refused for being too many."""

    def __init__(
        self, reason: str, message: str, *, user_id: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.user_id = user_id
        self.retry_after = retry_after


INVALID = "The email address or password is incorrect."


async def authenticate_password(
    db: Database, hasher: PasswordHasher, events: EventBus, email: str, password: str
) -> User:
    if not email or not password or len(email) > MAX_EMAIL_LENGTH or len(password) > MAX_PASSWORD_INPUT:
        await hasher.verify(None, password[:MAX_PASSWORD_INPUT] or "x")  # same cost as a real check
        await events.publish(LoginFailed(reason="invalid_credentials"))
        raise LoginFailure("invalid_credentials", INVALID)
    async with db.session() as session:
        user = await UserRepository(session).get_by_email(email)
        stored_hash = user.password_hash if user else None
    # Verified even for unknown users (against a dummy hash): no enumeration by timing.
    if not await hasher.verify(stored_hash, password) or user is None:
        user_id = user.id if user else None
        await events.publish(LoginFailed(reason="invalid_credentials", user_id=user_id))
        raise LoginFailure("invalid_credentials", INVALID, user_id=user_id)
    if user.disabled:
        await events.publish(LoginFailed(reason="disabled", user_id=user.id))
        raise LoginFailure("disabled", "This account cannot sign in. Contact the administrator.")
    if not user.email_verified:
        await events.publish(LoginFailed(reason="unverified", user_id=user.id))
        raise LoginFailure("unverified", "Confirm your email address first, using the link we sent you.")
    new_hash = await hasher.hash(password) if hasher.needs_rehash(stored_hash or "") else None
    async with db.session() as session:
        fresh = await UserRepository(session).get(user.id)
        if fresh is not None:
            fresh.last_login_at = utcnow()
            if new_hash:
                # Parameters changed since this hash was made: upgrade it now that we know the password.
                fresh.password_hash = new_hash
            user = fresh
    return user


@dataclass(frozen=True)
class PasswordSignIn:
    """What a password sign-in needs (from the runtime)."""

    db: Database
    hasher: PasswordHasher
    events: EventBus
    limits: RateLimiter
    guard: LoginGuard


def _wait_text(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{round(seconds / 60)} minutes"


async def _trusted_device(db: Database, account: str, device_token: str | None) -> bool:
    """Whether this browser signed in to the account before (its device cookie is known)."""
    if not device_token or not account or len(device_token) > 100:
        return False
    async with db.session() as session:
        found = await session.scalar(
            select(KnownDevice.user_id)
            .join(User, User.id == KnownDevice.user_id)
            .where(User.email_normalized == account, KnownDevice.device_digest == sha256_digest(device_token))
        )
    return found is not None


async def _user_id_of(db: Database, account: str) -> str | None:
    async with db.session() as session:
        user = await UserRepository(session).get_by_email(account)
    return user.id if user is not None else None


async def sign_in_with_password(
    deps: PasswordSignIn, email: str, password: str, *, ip: str, device_token: str | None
) -> User:
    """The user whose password this is, or :class:`LoginFailure` (``retry_after`` set when refused
    for too many attempts: the caller answers 429)."""
    account = normalize_email(email)[:MAX_EMAIL_LENGTH] if email else ""
    # A browser that signed in to the account before is exempt from the per-account limit, as from
    # the account-wide lock: otherwise anyone could keep the owner out by sending wrong passwords for
    # the address from anywhere (ASVS 6.1.1; NIST SP 800-63B §3.2.2, anti-lockout). The per-IP limit
    # and the per-account-and-IP delay and lock still apply to it.
    trusted = await _trusted_device(deps.db, account, device_token)
    per_account = None if trusted or not account else account
    try:
        await deps.limits.hit_all({"login_per_ip": ip, "login_per_account": per_account})
    except RateLimited as exc:
        await deps.events.publish(LoginFailed(reason="rate_limited"))
        raise LoginFailure(
            "rate_limited",
            f"Too many sign-in attempts. Wait {_wait_text(exc.retry_after)} before trying again.",
            retry_after=exc.retry_after,
        ) from None
    if account:
        try:
            await deps.guard.check(account, ip, trusted_device=trusted)
        except LockedOut as exc:
            await deps.events.publish(LoginFailed(reason="locked", user_id=await _user_id_of(deps.db, account)))
            message = (
                f"Too many failed attempts. Wait {_wait_text(exc.retry_after)} before trying again."
                if exc.scope == "delay"
                else f"Too many failed sign-in attempts: signing in is blocked for {_wait_text(exc.retry_after)}. "
                "You can reset your password to get in now."
            )
            raise LoginFailure("locked", message, retry_after=exc.retry_after) from None
    try:
        user = await authenticate_password(deps.db, deps.hasher, deps.events, email, password)
    except LoginFailure as failure:
        if failure.reason == "invalid_credentials" and account:
            for engaged in await deps.guard.failed(account, ip):
                if failure.user_id is not None and engaged.scope != "ip":
                    await deps.events.publish(
                        AccountLocked(user_id=failure.user_id, scope=engaged.scope, duration=engaged.duration)
                    )
        raise
    await deps.guard.succeeded(account, ip)
    return user
