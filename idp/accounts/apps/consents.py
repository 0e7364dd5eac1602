"""Remembered consent per user and client: which scopes the user has agreed to share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from idp.events import ConsentWithdrawn, EventBus
from idp.storage.db import Database
from idp.storage.models import Consent, OAuthClient


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


@dataclass(frozen=True)
class ConsentView:
    client_id: str
    client_name: str
    scopes: list[str]
    updated_at: datetime


async def list_for_user(db: Database, user_id: str) -> list[ConsentView]:
    async with db.session() as session:
        rows = (
            await session.execute(
                select(Consent, OAuthClient.name)
                .join(OAuthClient, OAuthClient.id == Consent.client_id)
                .where(Consent.user_id == user_id)
                .order_by(OAuthClient.name)
            )
        ).all()
    return [
        ConsentView(row.Consent.client_id, row.name, list(row.Consent.scopes), row.Consent.updated_at) for row in rows
    ]


async def withdraw_and_announce(db: Database, events: EventBus, user_id: str, client_id: str) -> bool:
    """Withdraw consent and announce it, so the protocol side revokes the client's tokens."""
    removed = await withdraw(db, user_id, client_id)
    if removed:
        await events.publish(ConsentWithdrawn(user_id=user_id, client=client_id))
    return removed
