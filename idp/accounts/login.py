"""Password sign-in: the same answer and the same cost whether or not the account exists."""

from __future__ import annotations

from idp.events import EventBus, LoginFailed
from idp.security.passwords import PasswordHasher
from idp.storage.db import Database
from idp.storage.models import User, utcnow
from idp.storage.repositories import UserRepository

MAX_EMAIL_LENGTH = 320
MAX_PASSWORD_INPUT = 1024  # refuse absurd inputs before hashing (argon2 cost is per byte, too)


class LoginFailure(Exception):
    """``reason`` is for the audit log; ``message`` is what the user sees (never says which part was wrong)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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
        await events.publish(LoginFailed(reason="invalid_credentials", user_id=user.id if user else None))
        raise LoginFailure("invalid_credentials", INVALID)
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
