"""Single-use, expiring tokens for links sent by email.

Only a SHA-256 digest is stored. Issuing a new link for the same purpose invalidates the older
unused ones (only the newest email works). Consumption is one atomic UPDATE, so a link can't be
used twice even by two requests racing.
"""

from __future__ import annotations

from datetime import timedelta

from idp.security.tokens import random_token, sha256_digest
from idp.storage.db import Database
from idp.storage.models import OneTimeToken, utcnow
from idp.storage.repositories import LinkRepository
from idp.storage.repositories.outbox import DbSession

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose name, not a secret
CHANGE_EMAIL = "change_email"
MAX_TOKEN_LENGTH = 128


def new_link(
    *,
    purpose: str,
    user_id: str,
    ttl: int,
    email: str | None = None,
    return_to: str | None = None,
    browser_binding: str | None = None,
) -> tuple[str, OneTimeToken]:
    """A new link's token and the row to store for it (its digest), for the caller's transaction."""
    token = random_token(32)
    now = utcnow()
    row = OneTimeToken(
        digest=sha256_digest(token),
        purpose=purpose,
        user_id=user_id,
        email=email,
        return_to=return_to,
        browser_digest=sha256_digest(browser_binding) if browser_binding else None,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    return token, row


async def issue(
    db: Database,
    *,
    purpose: str,
    user_id: str,
    ttl: int,
    email: str | None = None,
    return_to: str | None = None,
    browser_binding: str | None = None,
    session: DbSession | None = None,
) -> str:
    """A new link's token; its row is written in ``session`` when given (so the link and the mail
    that carries it commit together, see AccountContext.send), else in a transaction of its own."""
    token, row = new_link(
        purpose=purpose, user_id=user_id, ttl=ttl, email=email, return_to=return_to, browser_binding=browser_binding
    )
    if session is not None:
        await LinkRepository(session).issue(row)
        return token
    async with db.session() as own:
        await LinkRepository(own).issue(row)
    return token


async def peek(db: Database, purpose: str, token: str | None) -> OneTimeToken | None:
    """The valid, unused token row (for a confirmation page), without consuming it."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    async with db.session() as session:
        row = await LinkRepository(session).peek(sha256_digest(token))
    if row is None or row.purpose != purpose or row.used_at is not None or row.expires_at <= utcnow():
        return None
    return row


async def consume(db: Database, purpose: str, token: str | None) -> OneTimeToken | None:
    """Use the token: returns its row for exactly one caller, None if invalid, expired or used."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    async with db.session() as session:
        return await LinkRepository(session).consume(sha256_digest(token), purpose, utcnow())
