"""Revoked access tokens and grants: recorded in SQL, cached in the key-value store (issue 15).

The database is the record: a revocation is committed there before the key-value store hears of
it, so a revocation that could not be recorded fails (DatabaseUnavailable, 503) instead of being
reported done. The key-value store is the fast path: verifying an access token reads its jti, its
grant and a "loaded" marker in one round trip (MGET). When the marker is missing, the store is new
or lost its data (a Redis restart without persistence, a new embedded process): that request asks
the database directly, and one request (one per deployment, under a key-value lock) reloads every
revocation still in force, which are few: each lives at most an access-token lifetime. The marker
expires after RELOAD_EVERY seconds, so a cached revocation lost any other way (evicted, the last
second before a crash under `appendfsync everysec`, an old snapshot restored) is back within it.

On serving nodes :meth:`Denylist.keep_loaded` re-syncs the store from the database in the
background before the marker expires (one node at a time), so in steady state no request waits for
a reload or asks the database: only a store that really lost its data costs that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from idp.security.tokens import random_token
from idp.storage.db import DATABASE_ERRORS, Database, DatabaseUnavailable
from idp.storage.kv import KeyValueError, KeyValueStore
from idp.storage.repositories import RevocationRepository

__all__ = ("GRANT_CLAIM", "RELOAD_EVERY", "Denylist")

log = logging.getLogger("idp.denylist")

# A private claim (RFC 9068 §2.2.1 allows claims beyond the registered ones) naming the grant an
# access token came from: revoking the grant refuses its access tokens without an index of them.
# Opaque to clients: a random id with no meaning outside this server.
GRANT_CLAIM = "gid"

_REVOKED_JTI = "revoked_jti:"
_REVOKED_GRANT = "revoked_grant:"
_LOADED = "revocations_loaded"
_RELOAD_LOCK = "revocations_reload_lock"
_RELOAD_LOCK_TTL = 30.0
RELOAD_EVERY = 60.0
# A background re-sync that fails with one of these is tried again at the next check.
_RESYNC_ERRORS: tuple[type[BaseException], ...] = (KeyValueError, DatabaseUnavailable, *DATABASE_ERRORS)


class Denylist:
    def __init__(self, kv: KeyValueStore, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._db = db
        self._clock = clock
        self._reloading = asyncio.Lock()
        # How many times this process reloaded the key-value store from the database.
        self.reloads = 0
        self._keeper: asyncio.Task[None] | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _ttl(self, until: datetime) -> float:
        return max(1.0, until.timestamp() - self._clock())

    # -- the fast path, after the record is committed --------------------------------------------

    async def deny_access_token(self, jti: str, expires_at: datetime) -> None:
        """Cache a committed revocation of one access token until ``expires_at``, when it would be
        refused anyway (its ``exp`` plus the clock-skew leeway of verification)."""
        await self._kv.set(_REVOKED_JTI + jti, "1", ttl=self._ttl(expires_at))

    async def deny_grant(self, grant_id: str, until: datetime) -> None:
        """Cache a committed revocation of a grant, until its last access token expires."""
        await self._kv.set(_REVOKED_GRANT + grant_id, "1", ttl=self._ttl(until))

    async def revoke_access_token(self, jti: str, expires_at: datetime) -> None:
        """Record and cache, for a caller without a unit of work of its own."""
        async with self._db.session() as session:
            await RevocationRepository(session).revoke_access_token(jti, expires_at, self._now())
        await self.deny_access_token(jti, expires_at)

    # -- the check ------------------------------------------------------------------------------

    async def is_revoked(self, jti: str, grant_id: str | None) -> bool:
        """Whether the access token ``jti`` of ``grant_id`` is revoked: one key-value round trip
        while the store holds the revocations; the database otherwise (while they are reloaded)."""
        keys = [_REVOKED_JTI + jti, _LOADED]
        if grant_id is not None:
            keys.append(_REVOKED_GRANT + grant_id)
        values = await self._kv.get_many(*keys)
        if values[0] is not None or (grant_id is not None and values[2] is not None):
            return True
        if values[1] is not None:
            return False
        async with self._db.session() as session:
            revoked = await RevocationRepository(session).is_revoked(jti, grant_id, self._now())
        await self.reload()
        return revoked

    async def reload(self, *, resync: bool = False) -> bool:
        """Put every revocation still in force back into the key-value store, then the marker; at
        once by one request of one process (others meanwhile ask the database). True when this
        call reloaded. ``resync`` reloads even while the marker is there (and renews it)."""
        if self._reloading.locked():
            return False
        async with self._reloading:
            holder = random_token(8)
            if not await self._kv.set_if_absent(_RELOAD_LOCK, holder, ttl=_RELOAD_LOCK_TTL):
                return False  # another process is reloading
            try:
                if not resync and await self._kv.get(_LOADED) is not None:
                    return False
                async with self._db.session() as session:
                    tokens, grants = await RevocationRepository(session).live(self._now())
                for jti, expires_at in tokens:
                    await self.deny_access_token(jti, expires_at)
                for grant_id, until in grants:
                    await self.deny_grant(grant_id, until)
                # Lost again while reloading (the lock went with it): leave the marker unset.
                if await self._kv.get(_RELOAD_LOCK) != holder:
                    return False
                await self._kv.set(_LOADED, "1", ttl=RELOAD_EVERY)
                self.reloads += 1
                log.info("denylist reloaded from the database", extra={"tokens": len(tokens), "grants": len(grants)})
                return True
            finally:
                await self._kv.delete_if_equal(_RELOAD_LOCK, holder)

    # -- serving nodes: keep the marker from expiring in steady state --------------------------

    async def keep_loaded(self, check_every: float = RELOAD_EVERY / 6) -> None:
        """Re-sync before the marker expires: whichever node first sees less than half of its
        lifetime left reloads (the others find it renewed)."""
        while True:
            await asyncio.sleep(check_every)
            try:
                left = await self._kv.ttl(_LOADED)
                if left is None or left < RELOAD_EVERY / 2:
                    await self.reload(resync=True)
            except _RESYNC_ERRORS as exc:  # the store or the database away: requests fall back
                log.warning("denylist not re-synced", extra={"error": type(exc).__name__})

    def start(self) -> None:
        self._keeper = asyncio.create_task(self.keep_loaded())

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
