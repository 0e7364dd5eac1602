"""Creating user accounts, and the checks of what goes into one (address, password)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from idp.accounts.password_policy import PasswordPolicy, PasswordRejected
from idp.events import EventBus, UserCreated
from idp.security.passwords import PasswordHasher
from idp.storage.db import Database
from idp.storage.models import User, new_id, utcnow
from idp.storage.repositories import UserRepository

# What a form decoder puts in place of bytes that were not UTF-8 (Quart decodes with "replace").
REPLACEMENT_CHARACTER = "\ufffd"
MIN_PASSWORD_LENGTH = 15  # NIST SP 800-63B rev. 4 §3.1.1.2, password as a single factor
MAX_PASSWORD_LENGTH = 128


class AccountError(ValueError):
    """A user-facing account problem; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class NewUser:
    email: str
    password: str | None
    name: str | None = None
    email_verified: bool = False
    is_admin: bool = False


def normalize_email(email: str) -> str:
    """The form of an address that accounts are unique by and looked up by (``email_normalized``)."""
    # Domain parts are case-insensitive; local parts technically are not, but every mainstream
    # provider treats them so, and two accounts differing only in case invite confusion.
    return email.strip().lower()


def check_email(email: str) -> str:
    """Syntax check without DNS (deliverability is proven by the verification email)."""
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AccountError("email", str(exc)) from None


def check_password_length(password: str) -> None:
    # The full policy (blocklist, context words, strength) arrives with registration; the length
    # bounds apply to every way of setting a password already.
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")


def check_new_user(new: NewUser, policy: PasswordPolicy | None = None) -> tuple[str, str | None]:
    """Every check that needs no database: returns the normalised email and display name.

    Callers run it before opening connections, so rejected input has no side effects at all.
    With a policy, the password is judged by it (blocklist, context, strength); without one,
    only the length bounds apply.
    """
    email = check_email(new.email)
    name = (new.name or "").strip() or None
    if name is not None and len(name) > 200:
        raise AccountError("name", "must be at most 200 characters")
    if new.password is not None:
        if policy is None:
            check_password_length(new.password)
        else:
            try:
                policy.check(new.password, email=email, name=name)
            except PasswordRejected as exc:
                raise AccountError("password", exc.message) from None
    return email, name


def _password_error(exc: PasswordRejected, field: str = "password") -> AccountError:
    error = AccountError(field, exc.message)
    error.rule = exc.rule  # type: ignore[attr-defined]
    return error


async def check_new_password(
    policy: PasswordPolicy,
    password: str,
    *,
    email: str | None,
    name: str | None,
    field: str = "password",
    has_second_factor: bool = False,
) -> None:
    """A password chosen at registration, reset or change: the policy's verdict, plus one thing the
    policy can't see: a password that arrived as invalid UTF-8 was decoded lossily (U+FFFD), and
    hashing that would let other byte strings match it (ASVS 6.2.8: verified exactly as received).
    Raises AccountError(``field``, …) with the policy's ``rule`` attached.

    The policy runs in a worker thread: its strength estimate (zxcvbn) takes up to ~65 ms for a
    long password, which on the event loop would stall every other request (issue 14)."""
    if REPLACEMENT_CHARACTER in password:
        error = AccountError(
            field,
            "Your password contains a character that could not be read (U+FFFD, or text not sent as UTF-8). "
            "Remove it and try again.",
        )
        error.rule = "invalid"  # type: ignore[attr-defined]
        raise error
    try:
        await asyncio.to_thread(policy.check, password, email=email, name=name, has_second_factor=has_second_factor)
    except PasswordRejected as exc:
        raise _password_error(exc, field) from None


def new_user_row(
    email: str, name: str | None, password_hash: str | None, *, email_verified: bool = False, is_admin: bool = False
) -> User:
    """The users row of a new account, every value set here (its id included), so it can be
    inserted in one statement and referenced (by a verification link) in the same transaction.
    ``email`` and ``name`` have been checked already."""
    now = utcnow()
    return User(
        id=new_id(),
        email=email,
        email_normalized=normalize_email(email),
        email_verified=email_verified,
        password_hash=password_hash,
        name=name,
        is_admin=is_admin,
        disabled=False,
        created_at=now,
        updated_at=now,
        password_changed_at=now if password_hash else None,
    )


async def create_user(
    db: Database, hasher: PasswordHasher, events: EventBus, new: NewUser, policy: PasswordPolicy | None = None
) -> User:
    """Create an account (the CLI, the demo, tests); self-service registration is
    idp.accounts.registration.signup.register. Raises AccountError, and changes nothing, when the input is
    refused or the address has an account already."""
    email, name = check_new_user(new, policy)
    password_hash = await hasher.hash(new.password) if new.password is not None else None
    user = new_user_row(email, name, password_hash, email_verified=new.email_verified, is_admin=new.is_admin)
    async with db.session() as session:
        if not await UserRepository(session).add_unless_taken(user):
            raise AccountError("email", "an account with this address already exists")
    await events.publish(UserCreated(user_id=user.id, admin=new.is_admin, verified=new.email_verified))
    return user
