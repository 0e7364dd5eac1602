"""Remembered consent per user and client: which scopes the user has agreed to share."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from idp.storage.db import Database
from idp.storage.models import Consent


async def granted_scopes(db: Database, user_id: str, client_id: str) -> set[str]:
    async with db.session() as session:
        row = (
            await session.execute(select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id))
        ).scalar_one_or_none()
    return set(row.scopes) if row else set()


async def grant(db: Database, user_id: str, client_id: str, scopes: Iterable[str]) -> set[str]:
    """Add scopes to the user's consent for the client; returns the full consented set."""
    async with db.session() as session:
        row = (
            await session.execute(select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id))
        ).scalar_one_or_none()
        if row is None:
            row = Consent(user_id=user_id, client_id=client_id, scopes=sorted(set(scopes)))
            session.add(row)
        else:
            row.scopes = sorted(set(row.scopes) | set(scopes))
        return set(row.scopes)


async def withdraw(db: Database, user_id: str, client_id: str) -> bool:
    async with db.session() as session:
        result = await session.execute(
            delete(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
        )
        return bool(getattr(result, "rowcount", 0))
