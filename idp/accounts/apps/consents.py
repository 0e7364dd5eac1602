"""Remembered consent per user and client: which scopes the user has agreed to share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from idp.events import ConsentWithdrawn, EventBus
from idp.storage.db import Database
from idp.storage.repositories import ConsentRepository


async def granted_scopes(db: Database, user_id: str, client_id: str) -> set[str]:
    async with db.session() as session:
        return await ConsentRepository(session).granted_scopes(user_id, client_id)


async def grant(db: Database, user_id: str, client_id: str, scopes: Iterable[str]) -> set[str]:
    """Add scopes to the user's consent for the client; returns the full consented set."""
    async with db.session() as session:
        return await ConsentRepository(session).grant(user_id, client_id, scopes)


async def withdraw(db: Database, user_id: str, client_id: str) -> bool:
    async with db.session() as session:
        return await ConsentRepository(session).withdraw(user_id, client_id)


@dataclass(frozen=True)
class ConsentView:
    client_id: str
    client_name: str
    scopes: list[str]
    updated_at: datetime


async def list_for_user(db: Database, user_id: str) -> list[ConsentView]:
    async with db.session() as session:
        rows = await ConsentRepository(session).list_for_user(user_id)
    return [ConsentView(consent.client_id, name, list(consent.scopes), consent.updated_at) for consent, name in rows]


async def withdraw_and_announce(db: Database, events: EventBus, user_id: str, client_id: str) -> bool:
    """Withdraw consent and announce it, so the protocol side revokes the client's tokens."""
    removed = await withdraw(db, user_id, client_id)
    if removed:
        await events.publish(ConsentWithdrawn(user_id=user_id, client=client_id))
    return removed
