"""Cross-origin access for browser apps, limited to the web origins registered on clients.

Only the endpoints a browser app calls directly answer cross-origin (token, userinfo,
revocation, introspection; discovery and JWKS are public). Never with credentials: these
endpoints take Bearer tokens or client credentials, not cookies. The authorization endpoint
never answers cross-origin (RFC 9700 §2.6).
"""

from __future__ import annotations

import time

from idp.storage.db import Database
from idp.storage.repositories import ClientRepository

PREFLIGHT_MAX_AGE = 600
ALLOWED_HEADERS = "Authorization, Content-Type, DPoP"
EXPOSED_HEADERS = "WWW-Authenticate, Retry-After"


class CorsPolicy:
    """The registered web origins, re-read at most every ``refresh_interval`` seconds (so a client
    registered on any node is honoured everywhere shortly after)."""

    def __init__(self, db: Database, refresh_interval: float = 30.0) -> None:
        self._db = db
        self._refresh_interval = refresh_interval
        self._origins: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")

    async def allowed(self, origin: str | None) -> bool:
        if not origin or origin == "null" or len(origin) > 300:
            return False
        if time.monotonic() - self._loaded_at >= self._refresh_interval:
            await self.reload()
        return origin in self._origins

    async def reload(self) -> None:
        async with self._db.session() as session:
            self._origins = frozenset(await ClientRepository(session).enabled_web_origins())
        self._loaded_at = time.monotonic()
