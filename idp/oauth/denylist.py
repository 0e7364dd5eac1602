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

Serving nodes whose store hears every process's announcements (Redis, or the in-process store's
relay through the database) also hold the revocations in force in memory (issue 14: the MGET was
one of an introspection's two round trips), the way idp.storage.repositories.row_cache holds
rows: loaded from the database once subscribed to the revocations' channel, every committed
revocation announced there (and added at once on the node that made it), loaded again every
RELOAD_EVERY / 6 seconds as a bound should an announcement be lost. While a node is not subscribed,
still loading, or holding more than MIRROR_LIMIT revocations, it checks the store as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from idp.security.tokens import random_token
from idp.storage.db import DATABASE_ERRORS, Database, DatabaseUnavailable
from idp.storage.kv import KeyValueError, KeyValueStore
from idp.storage.kv.subscription import Subscription
from idp.storage.repositories import RevocationRepository

__all__ = ("CHANNEL", "GRANT_CLAIM", "MIRROR_LIMIT", "RELOAD_EVERY", "Denylist")

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
CHANNEL = "revocations"  # "<t|g> <until, epoch seconds> <jti | grant id>" per committed revocation
# Revocations are few (each lives at most an access-token lifetime), but a client revoking its
# own tokens as fast as its rate limit lets it must not grow every worker's memory without bound.
MIRROR_LIMIT = 100_000
# A background re-sync that fails with one of these is tried again at the next check.
_RESYNC_ERRORS: tuple[type[BaseException], ...] = (KeyValueError, DatabaseUnavailable, *DATABASE_ERRORS)
_LOAD_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *DATABASE_ERRORS)


class _Mirror:
    """The revocations in force, in this process: until when each jti and grant is refused."""

    def __init__(self) -> None:
        self.active = False  # answers may come from here (subscribed, loaded, within the limit)
        self.tokens: dict[str, float] = {}
        self.grants: dict[str, float] = {}

    def add(self, kind: str, key: str, until: float) -> None:
        revoked = self.tokens if kind == "t" else self.grants
        revoked[key] = max(until, revoked.get(key, until))
        if self.over_limit():
            # Checks go to the store until a load finds fewer; what was held is dropped (the
            # database has it), so memory stays bounded however many are heard.
            if self.active:
                log.warning("too many revocations to hold in memory", extra={"limit": MIRROR_LIMIT})
            self.clear()

    def over_limit(self) -> bool:
        return len(self.tokens) + len(self.grants) > MIRROR_LIMIT

    def revoked(self, jti: str, grant_id: str | None, now: float) -> bool:
        if self.tokens.get(jti, 0.0) > now:
            return True
        return grant_id is not None and self.grants.get(grant_id, 0.0) > now

    def clear(self) -> None:
        self.active = False
        self.tokens.clear()
        self.grants.clear()


class Denylist:
    def __init__(self, kv: KeyValueStore, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._db = db
        self._clock = clock
        self._reloading = asyncio.Lock()
        # How many times this process reloaded the key-value store from the database.
        self.reloads = 0
        self._keeper: asyncio.Task[None] | None = None
        self._mirror = _Mirror()
        self._subscription: Subscription | None = None
        self._hearing = False
        self._deafened = 0  # times this node stopped hearing: a load begun before is incomplete
        self._loading: asyncio.Task[None] | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _ttl(self, until: datetime) -> float:
        return max(1.0, until.timestamp() - self._clock())

    # -- the fast path, after the record is committed --------------------------------------------

    async def deny_access_token(self, jti: str, expires_at: datetime) -> None:
        """Cache a committed revocation of one access token until ``expires_at``, when it would be
        refused anyway (its ``exp`` plus the clock-skew leeway of verification)."""
        await self._deny("t", _REVOKED_JTI, jti, expires_at)

    async def deny_grant(self, grant_id: str, until: datetime) -> None:
        """Cache a committed revocation of a grant, until its last access token expires."""
        await self._deny("g", _REVOKED_GRANT, grant_id, until)

    async def _deny(self, kind: str, prefix: str, key: str, until: datetime) -> None:
        """Held here at once (while this node holds revocations), in the store, then announced to
        the nodes holding them in memory."""
        if self._hearing:
            self._mirror.add(kind, key, until.timestamp())
        await self._store(prefix, key, until)
        if self._kv.shared:
            await self._kv.publish(CHANNEL, f"{kind} {math.ceil(until.timestamp())} {key}")

    async def _store(self, prefix: str, key: str, until: datetime) -> None:
        await self._kv.set(prefix + key, "1", ttl=self._ttl(until))

    async def revoke_access_token(self, jti: str, expires_at: datetime) -> None:
        """Record and cache, for a caller without a unit of work of its own."""
        async with self._db.session() as session:
            await RevocationRepository(session).revoke_access_token(jti, expires_at, self._now())
        await self.deny_access_token(jti, expires_at)

    # -- the check ------------------------------------------------------------------------------

    async def is_revoked(self, jti: str, grant_id: str | None) -> bool:
        """Whether the access token ``jti`` of ``grant_id`` is revoked: from memory on a serving
        node that holds the revocations; else one key-value round trip while the store holds them;
        the database otherwise (while they are reloaded)."""
        if self._mirror.active:
            return self._mirror.revoked(jti, grant_id, self._clock())
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
                # Into the store only: what the database holds is announced already, and the
                # nodes holding revocations in memory load it themselves.
                for jti, expires_at in tokens:
                    await self._store(_REVOKED_JTI, jti, expires_at)
                for grant_id, until in grants:
                    await self._store(_REVOKED_GRANT, grant_id, until)
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
        lifetime left reloads (the others find it renewed). The revocations held in memory are
        loaded again each time."""
        while True:
            await asyncio.sleep(check_every)
            try:
                left = await self._kv.ttl(_LOADED)
                if left is None or left < RELOAD_EVERY / 2:
                    await self.reload(resync=True)
            except _RESYNC_ERRORS as exc:  # the store or the database away: requests fall back
                log.warning("denylist not re-synced", extra={"error": type(exc).__name__})
            if self._hearing:
                await self._load_mirror()

    # -- serving nodes: the revocations in memory ------------------------------------------------

    @property
    def in_memory(self) -> bool:
        """Whether checks are answered from memory (subscribed and loaded)."""
        return self._mirror.active

    async def _load_mirror(self) -> None:
        """Add every revocation in force from the database, then answer from memory. What was
        heard meanwhile stays: revocations are only ever added."""
        deafened = self._deafened
        try:
            async with self._db.session() as session:
                tokens, grants = await RevocationRepository(session).live(self._now())
        except _LOAD_ERRORS as exc:
            log.warning("revocations not loaded into memory", extra={"error": type(exc).__name__})
            return
        if not self._hearing or deafened != self._deafened:
            return  # deaf meanwhile: what was revoked then may be missing from what was read
        now = self._clock()
        mirror = _Mirror()
        mirror.tokens = {jti: expires_at.timestamp() for jti, expires_at in tokens}
        mirror.grants = {grant_id: until.timestamp() for grant_id, until in grants}
        for loaded, heard in ((mirror.tokens, self._mirror.tokens), (mirror.grants, self._mirror.grants)):
            for key, heard_until in heard.items():
                if heard_until > now:
                    loaded[key] = max(heard_until, loaded.get(key, heard_until))
        if mirror.over_limit():
            if self._mirror.active:
                log.warning("too many revocations to hold in memory", extra={"limit": MIRROR_LIMIT})
            mirror.clear()
        else:
            mirror.active = True
        self._mirror = mirror

    async def _heard(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        until, _, key = rest.partition(" ")
        if kind not in ("t", "g") or not key or not until.isdigit():
            log.warning("not a revocation announcement: ignored", extra={"channel": CHANNEL})
            return
        self._mirror.add(kind, key, float(until))

    def _subscribed(self) -> None:
        # Anything revoked before may have gone unheard: loaded from the record, answers from
        # the store meanwhile.
        self._hearing = True
        self._mirror.clear()
        self._loading = asyncio.create_task(self._load_mirror())

    def _deaf(self) -> None:
        self._hearing = False
        self._deafened += 1
        self._mirror.clear()

    def start(self) -> None:
        self._keeper = asyncio.create_task(self.keep_loaded())

    async def listen(self) -> None:
        """Hold the revocations in memory from now on, where every process's revocations are
        announced to this one (Redis, or the in-process store's relay through the database); return
        once subscribed and loaded, or after a few seconds."""
        if not self._kv.shared:
            return
        self._subscription = Subscription(
            self._kv,
            CHANNEL,
            self._heard,
            what="revocation announcements",
            on_subscribed=self._subscribed,
            on_lost=self._deaf,
        )
        await self._subscription.start()
        if self._loading is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._loading), 5.0)

    async def stop(self) -> None:
        for task in (self._keeper, self._loading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._keeper = self._loading = None
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        self._deaf()
