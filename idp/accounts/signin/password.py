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
from idp.events import AccountLocked, EventBus, LoginFailed, Transaction
from idp.security.lockout import LockedOut, LoginGuard
from idp.security.passwords import PasswordHasher
from idp.security.ratelimit import RateLimited, RateLimiter
from idp.security.tokens import sha256_digest
from idp.storage.db import Database
from idp.storage.models import User, utcnow
from idp.storage.repositories import UserRepository
from idp.storage.repositories.outbox import DbSession
from idp.storage.repositories.users import SignInAccount

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


@dataclass(frozen=True)
class PasswordChecked:
    """A password that proved its user, who may sign in: what the sign-in goes on with. Its writes
    (the sign-in time, ``new_hash``) wait for the unit of work that starts the session
    (:func:`record_sign_in`), or that of their own before a second factor is asked for."""

    user: User
    second_factor: bool  # the account has a confirmed second factor
    device_known: bool  # this browser signed in to the account before
    new_hash: str | None  # the password hashed again with today's parameters, if they changed


async def record_sign_in(session: DbSession, checked: PasswordChecked) -> User:
    """Write what the password check learnt in ``session``: the sign-in time and, when the hashing
    parameters changed since the stored hash was made, the upgraded hash (now that we know the
    password). The account as adopted into ``session``."""
    users = UserRepository(session)
    user = await users.adopt(checked.user)
    await users.record_sign_in(user, at=utcnow(), password_hash=checked.new_hash)
    return user


class _Refused(LoginFailure):
    """A failed attempt, with the audit record to make of it (``subject``: whom it is about)."""

    def __init__(self, reason: str, message: str, *, user_id: str | None = None, subject: str | None = None) -> None:
        super().__init__(reason, message, user_id=user_id)
        self.subject = subject if subject is not None else user_id


async def _check(hasher: PasswordHasher, found: SignInAccount | None, email: str, password: str) -> PasswordChecked:
    """Check ``password`` for ``found`` (the account of ``email``, if there is one); raises _Refused."""
    if not _acceptable(email, password):
        await hasher.verify(None, password[:MAX_PASSWORD_INPUT] or "x")  # same cost as a real check
        raise _Refused("invalid_credentials", INVALID)
    stored_hash = found.user.password_hash if found else None
    # Verified even for unknown users (against a dummy hash): no enumeration by timing.
    if not await hasher.verify(stored_hash, password) or found is None:
        user_id = found.user.id if found else None
        raise _Refused("invalid_credentials", INVALID, user_id=user_id)
    # Told only to whoever knows the password (a wrong one for a disabled account is just wrong).
    if (refusal := sign_in_refusal(found.user)) is not None:
        raise _Refused(refusal.reason, refusal.message, subject=found.user.id)
    new_hash = await hasher.hash(password) if hasher.needs_rehash(stored_hash or "") else None
    return PasswordChecked(found.user, found.second_factor, found.device_known, new_hash)


def _acceptable(email: str, password: str) -> bool:
    """Input worth looking up and hashing (argon2's cost grows with the password's length)."""
    return bool(email and password) and len(email) <= MAX_EMAIL_LENGTH and len(password) <= MAX_PASSWORD_INPUT


async def _look_up(db: Database, account: str, device_digest: str | None) -> SignInAccount | None:
    async with db.session() as session:
        return await UserRepository(session).for_sign_in(account, device_digest)


async def authenticate_password(
    db: Database, hasher: PasswordHasher, events: EventBus, email: str, password: str
) -> User:
    """The account whose password this is, its sign-in recorded (no rate limit, no lockout: those
    are :func:`sign_in_with_password`'s); LoginFailure otherwise."""
    found = await _look_up(db, normalize_email(email), None) if _acceptable(email, password) else None
    try:
        checked = await _check(hasher, found, email, password)
    except _Refused as failure:
        await events.publish(LoginFailed(reason=failure.reason, user_id=failure.subject))
        raise
    async with db.session() as session:
        return await record_sign_in(session, checked)


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


async def _admit(
    deps: PasswordSignIn,
    account: str,
    *,
    ip: str,
    trusted_device: bool,
    user_id: str | None,
    locked_user: Callable[[], Awaitable[str | None]],
) -> None:
    """Count an attempt on ``account`` (its normalised email) from ``ip`` before its password is
    checked: the rate limits, then the lockout guard (raising LoginFailure "rate_limited" or
    "locked", with ``retry_after``). ``locked_user`` names the account a lock answer is about.

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
    if not account:
        return
    try:
        await deps.guard.check(account, ip, trusted_device=trusted_device)
    except LockedOut as exc:
        locked = user_id or await locked_user()
        await deps.events.publish(LoginFailed(reason="locked", user_id=locked))
        message = (
            f"Too many failed attempts. Wait {_wait_text(exc.retry_after)} before trying again."
            if exc.scope == "delay"
            else f"Too many failed sign-in attempts: signing in is blocked for {_wait_text(exc.retry_after)}. "
            "You can reset your password to get in now."
        )
        raise LoginFailure("locked", message, user_id=locked, retry_after=exc.retry_after, scope=exc.scope) from None


async def _failed(deps: PasswordSignIn, account: str, ip: str, failure: _Refused) -> None:
    """Record a failed attempt: a wrong password feeds the guard, and the audit rows of the failure
    and of each lock it switched on (whose owner is mailed) are written in one unit of work."""
    engaged = []
    if failure.reason == "invalid_credentials" and account:
        engaged = [lock for lock in await deps.guard.failed(account, ip) if lock.scope != "ip"]
    async with Transaction.open(deps.db) as transaction:
        await deps.events.publish(LoginFailed(reason=failure.reason, user_id=failure.subject), within=transaction)
        if failure.user_id is not None:
            for lock in engaged:
                locked = AccountLocked(user_id=failure.user_id, scope=lock.scope, duration=lock.duration)
                await deps.events.publish(locked, within=transaction)


async def sign_in_with_password(
    deps: PasswordSignIn, email: str, password: str, *, ip: str, device_token: str | None
) -> PasswordChecked:
    """The account whose password this is, or :class:`LoginFailure` (``retry_after`` set when
    refused for too many attempts: the caller answers 429). Reads the account once: before the
    limits when the browser has a device cookie (they depend on whether it is the owner's), else
    after them (an attempt refused by them costs no statement)."""
    account = normalize_email(email)[:MAX_EMAIL_LENGTH] if email else ""
    digest = sha256_digest(device_token) if device_token and len(device_token) <= 100 else None
    found: SignInAccount | None = None
    looked_up = False
    if account and digest:
        found, looked_up = await _look_up(deps.db, account, digest), True

    async def locked_user() -> str | None:
        known = found if looked_up else await _look_up(deps.db, account, None)
        return known.user.id if known else None

    trusted = found is not None and found.device_known
    await _admit(deps, account, ip=ip, trusted_device=trusted, user_id=None, locked_user=locked_user)
    if not looked_up and _acceptable(email, password):
        found = await _look_up(deps.db, account, None)
    try:
        checked = await _check(deps.hasher, found, email, password)
    except _Refused as failure:
        await _failed(deps, account, ip, failure)
        raise
    await deps.guard.succeeded(account, ip)
    return checked


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
    token = devices.valid_device_token(device_token)
    digest = sha256_digest(token) if token else None
    async with deps.db.session() as session:
        found = await UserRepository(session).for_reauthentication(user_id, digest)
    if found is None or found.user.disabled:
        raise AccountError(field, "Your account is not available.")
    user, account = found.user, found.user.email_normalized

    async def locked_user() -> str | None:
        return user.id

    try:
        await _admit(deps, account, ip=ip, trusted_device=found.device_known, user_id=user.id, locked_user=locked_user)
        # Over-long input is refused unhashed (argon2's cost grows with it), as a wrong password.
        if len(password) > MAX_PASSWORD_INPUT or not await deps.hasher.verify(user.password_hash, password):
            failure = _Refused("invalid_credentials", _WRONG_PASSWORD.get(field, WRONG), user_id=user.id)
            await _failed(deps, account, ip, failure)
            raise failure
    except LoginFailure as failure:
        if failure.retry_after is not None:
            raise PasswordCheckRefused(field, _refusal_text(failure), failure.retry_after) from None
        raise AccountError(field, failure.message) from None
    await deps.guard.succeeded(account, ip)
    return user
