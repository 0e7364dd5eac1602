"""Registered clients kept in memory, so the token, introspection and revocation endpoints don't
read the client's row on every request (issue 14: the re-read was 14 % of a worker's time).

Every change to a client (``idp.oauth.clients``: created, updated, secret rotated, disabled,
enabled, deleted) calls :meth:`ClientCache.changed` after it is committed (``idp.runtime``
subscribes to those events), which forgets it on every node at once; how the cache stays honest
otherwise is :mod:`idp.storage.repositories.row_cache`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.db import Database
from idp.storage.kv import KeyValueStore
from idp.storage.models import OAuthClient
from idp.storage.repositories.clients import ClientRepository
from idp.storage.repositories.row_cache import ALL, RowCache

__all__ = ("ALL", "CHANNEL", "ClientCache")

CHANNEL = "clients_changed"


async def _load(session: AsyncSession, client_id: str) -> OAuthClient | None:
    return await ClientRepository(session).get(client_id)  # disabled ones included: callers decide


class ClientCache(RowCache[OAuthClient]):
    def __init__(
        self,
        db: Database,
        kv: KeyValueStore,
        *,
        max_age: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(db, kv, channel=CHANNEL, load=_load, max_age=max_age, max_entries=max_entries, clock=clock)
