"""Password sign-in, and password re-checks by a signed-in user: one way of counting attempts.

Sign-in gives the same answer at the same cost whether or not the account exists. Before any
password is checked, the attempt passes the rate limits (per IP, per account) and the brute-force
guard (progressive delay and lockout, idp.security.lockout); a wrong password feeds the guard, and
a lock it switches on is published (the owner is mailed). A re-check before a sensitive change
(:func:`reauthenticate`) is the same kind of attempt and goes through the same steps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from idp.accounts.sessions import devices
from idp.accounts.signin.eligibility import sign_in_refusal
from idp.accounts.users import AccountError, normalize_email
from idp.events import AccountLocked, EventBus, LoginFailed
from idp.security.lockout import LockedOut, LoginGuard
from idp.security.passwords import PasswordHasher
from idp.security.ratelimit import RateLimited, RateLimiter
from idp.storage.db import Database
from idp.storage.models import User, utcnow
from idp.storage.repositories import UserRepository

MAX_EMAIL_LENGTH = 320
MAX_PASSWORD_INPUT = 1024  # refuse absurd inputs before hashing (argon2 cost is per byte, too)


class LoginFailure(Exception):
    """``reason`` is for the audit log; ``message`` is what the user sees (never says which part was
    wrong). ``retry_after`` (seconds) is set when the attempt was refused for being too many, and
    ``scope`` then names the lock (as LockedOut does), None for a rate limit."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        user_id: str | None = None,
        retry_after: int | None = None,
        scope: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.user_id = user_id
        self.retry_after = retry_after
        self.scope = scope


INVALID = "The email address or password is incorrect."
WRONG = "The password is not correct."


async def authenticate_password(
    db: Database, hasher: PasswordHasher, events: EventBus, email: str, password: str
) -> User:
    if not email or not password or len(email) > MAX_EMAIL_LENGTH or len(password) > MAX_PASSWORD_INPUT:
        await hasher.verify(None, password[:MAX_PASSWORD_INPUT] or "x")  # same cost as a real check
        await events.publish(LoginFailed(reason="invalid_credentials"))
        raise LoginFailure("invalid_credentials", INVALID)
    async with db.session() as session:
        user = await UserRepository(session).get_by_email_normalized(normalize_email(email))
        stored_hash = user.password_hash if user else None
    # Verified even for unknown users (against a dummy hash): no enumeration by timing.
    if not await hasher.verify(stored_hash, password) or user is None:
        user_id = user.id if user else None
        await events.publish(LoginFailed(reason="invalid_credentials", user_id=user_id))
        raise LoginFailure("invalid_credentials", INVALID, user_id=user_id)
    # Told only to whoever knows the password (a wrong one for a disabled account is just wrong).
    if (refusal := sign_in_refusal(user)) is not None:
        await events.publish(LoginFailed(reason=refusal.reason, user_id=user.id))
        raise LoginFailure(refusal.reason, refusal.message)
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
    """What a password attempt needs (from the runtime): sign-in and re-authentication alike."""

    db: Database
    hasher: PasswordHasher
    events: EventBus
    limits: RateLimiter
    guard: LoginGuard


def _wait_text(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{round(seconds / 60)} minutes"


async def _user_id_of(db: Database, account: str) -> str | None:
    async with db.session() as session:
        user = await UserRepository(session).get_by_email_normalized(account)
    return user.id if user is not None else None


async def _guarded(
    deps: PasswordSignIn,
    account: str,
    *,
    ip: str,
    trusted_device: bool,
    user_id: str | None,
    verify: Callable[[], Awaitable[User]],
) -> User:
    """One password attempt on ``account`` (its normalised email) from ``ip``: ``verify`` checks the
    password, raising LoginFailure("invalid_credentials") when it is wrong.

    Before it runs, the attempt passes the rate limits and the lockout guard (raising LoginFailure
    "rate_limited" or "locked", with ``retry_after``); a wrong password feeds the guard, and each
    lock that switches on is published (the owner is mailed); a right one clears this IP's failures.

    A browser that signed in to the account before (``trusted_device``) is exempt from the
    per-account limit, as from the account-wide lock: otherwise anyone could keep the owner out by
    sending wrong passwords for the address from anywhere (ASVS 6.1.1; NIST SP 800-63B §3.2.2,
    anti-lockout). The per-IP limit and the per-account-and-IP delay and lock still apply to it.
    """
    per_account = None if trusted_device or not account else account
    try:
        await deps.limits.hit_all({"login_per_ip": ip, "login_per_account": per_account})
    except RateLimited as exc:
        await deps.events.publish(LoginFailed(reason="rate_limited", user_id=user_id))
        raise LoginFailure(
            "rate_limited",
            f"Too many sign-in attempts. Wait {_wait_text(exc.retry_after)} before trying again.",
            user_id=user_id,
            retry_after=exc.retry_after,
        ) from None
    if account:
        try:
            await deps.guard.check(account, ip, trusted_device=trusted_device)
        except LockedOut as exc:
            locked_user = user_id or await _user_id_of(deps.db, account)
            await deps.events.publish(LoginFailed(reason="locked", user_id=locked_user))
            message = (
                f"Too many failed attempts. Wait {_wait_text(exc.retry_after)} before trying again."
                if exc.scope == "delay"
                else f"Too many failed sign-in attempts: signing in is blocked for {_wait_text(exc.retry_after)}. "
                "You can reset your password to get in now."
            )
            raise LoginFailure(
                "locked", message, user_id=locked_user, retry_after=exc.retry_after, scope=exc.scope
            ) from None
    try:
        user = await verify()
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


async def sign_in_with_password(
    deps: PasswordSignIn, email: str, password: str, *, ip: str, device_token: str | None
) -> User:
    """The user whose password this is, or :class:`LoginFailure` (``retry_after`` set when refused
    for too many attempts: the caller answers 429)."""
    account = normalize_email(email)[:MAX_EMAIL_LENGTH] if email else ""
    trusted = await devices.is_known_to_address(deps.db, account, device_token)

    async def verify() -> User:
        return await authenticate_password(deps.db, deps.hasher, deps.events, email, password)

    return await _guarded(deps, account, ip=ip, trusted_device=trusted, user_id=None, verify=verify)


# -- re-authentication -----------------------------------------------------------------------------


class PasswordCheckRefused(AccountError):
    """The password was not checked: too many attempts (answer 429 with ``Retry-After``)."""

    def __init__(self, field: str, message: str, retry_after: int) -> None:
        super().__init__(field, message)
        self.retry_after = retry_after


_WRONG_PASSWORD = {"current_password": "The current password is incorrect."}


def _refusal_text(failure: LoginFailure) -> str:
    wait = _wait_text(failure.retry_after or 1)
    if failure.reason == "rate_limited":
        return f"Too many password attempts. Wait {wait} before trying again."
    if failure.scope == "delay":
        return f"Too many wrong passwords. Wait {wait} before trying again."
    return (
        f"Too many wrong passwords: your password can't be checked for {wait}. Resetting your password lifts the block."
    )


async def reauthenticate(
    deps: PasswordSignIn,
    user_id: str,
    password: str,
    *,
    ip: str,
    device_token: str | None,
    field: str = "password",
) -> User:
    """The signed-in user's password again, before a sensitive change (ASVS 7.5.1). Every password
    re-check goes through here.

    A re-check is an attempt at the same authenticator as a sign-in (NIST SP 800-63B §3.2.2: the
    limit on consecutive failures is per authenticator), so it counts exactly like one: the same
    rate limits and lockout guard, keyed by the account's normalised email and the client IP, with
    the same audit events and lock notices; a stolen session or access token is no password oracle.
    ``device_token`` is the browser's device cookie, by which the owner's own browser is known (an
    API caller has none: it counts as an unknown browser).

    Raises AccountError(``field``, …) for a wrong password and PasswordCheckRefused when refused
    before the check.
    """
    async with deps.db.session() as session:
        user = await UserRepository(session).get(user_id)
    if user is None or user.disabled:
        raise AccountError(field, "Your account is not available.")
    account = user.email_normalized
    trusted = await devices.is_known(deps.db, user.id, device_token)

    async def verify() -> User:
        # Over-long input is refused unhashed (argon2's cost grows with it), as a wrong password.
        if len(password) > MAX_PASSWORD_INPUT or not await deps.hasher.verify(user.password_hash, password):
            await deps.events.publish(LoginFailed(reason="invalid_credentials", user_id=user.id))
            raise LoginFailure("invalid_credentials", _WRONG_PASSWORD.get(field, WRONG), user_id=user.id)
        return user

    try:
        return await _guarded(deps, account, ip=ip, trusted_device=trusted, user_id=user.id, verify=verify)
    except LoginFailure as failure:
        if failure.retry_after is not None:
            raise PasswordCheckRefused(field, _refusal_text(failure), failure.retry_after) from None
        raise AccountError(field, failure.message) from None
