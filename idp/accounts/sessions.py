"""The IdP's browser sessions (single sign-on), kept in the key-value store.

The cookie holds a random 256-bit value; the store knows it only by its SHA-256 digest. A session
ends after ``idle_ttl`` of inactivity or ``absolute_ttl`` after sign-in, whichever comes first.
``sid`` is the public session identifier relying parties see in ID and logout tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from idp.security.tokens import random_token, sha256_digest
from idp.storage.kv import KeyValueStore

_SESSION = "session:"
_USER_SESSIONS = "user_sessions:"
_SID = "session_sid:"
# Refresh the idle deadline at most this often per session, to spare a write on every request.
_TOUCH_INTERVAL = 60


@dataclass
class BrowserSession:
    digest: str
    sid: str
    user_id: str
    auth_time: int
    amr: list[str]
    acr: str | None
    created_at: int
    last_seen: int
    ip: str | None = None
    user_agent: str | None = None
    # Clients that received tokens within this session: they get back-channel logout.
    clients: list[str] = field(default_factory=list)


class SessionStore:
    def __init__(
        self, kv: KeyValueStore, *, idle_ttl: int, absolute_ttl: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._kv = kv
        self.idle_ttl = idle_ttl
        self.absolute_ttl = absolute_ttl
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    def _ttl(self, session: BrowserSession, now: int) -> int:
        return max(1, min(self.idle_ttl, session.created_at + self.absolute_ttl - now))

    async def _save(self, session: BrowserSession, now: int) -> None:
        ttl = self._ttl(session, now)
        await self._kv.set(_SESSION + session.digest, json.dumps(asdict(session)), ttl=ttl)
        await self._kv.set(_SID + session.sid, session.digest, ttl=ttl)
        await self._kv.add_to_set(_USER_SESSIONS + session.user_id, session.digest, ttl=self.absolute_ttl)

    async def create(
        self,
        user_id: str,
        *,
        amr: Sequence[str],
        acr: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[str, BrowserSession]:
        """A new session with a fresh id (never reuse one across sign-ins: session fixation)."""
        now = self._now()
        cookie_value = random_token(32)
        session = BrowserSession(
            digest=sha256_digest(cookie_value),
            sid=random_token(16),
            user_id=user_id,
            auth_time=now,
            amr=list(amr),
            acr=acr,
            created_at=now,
            last_seen=now,
            ip=ip,
            user_agent=(user_agent or "")[:512] or None,
        )
        await self._save(session, now)
        return cookie_value, session

    async def load(self, cookie_value: str | None) -> BrowserSession | None:
        if not cookie_value or len(cookie_value) > 128:
            return None
        digest = sha256_digest(cookie_value)
        raw = await self._kv.get(_SESSION + digest)
        if raw is None:
            return None
        session = BrowserSession(**json.loads(raw))
        now = self._now()
        if now - session.created_at >= self.absolute_ttl or now - session.last_seen >= self.idle_ttl:
            await self.end(session)
            return None
        if now - session.last_seen >= _TOUCH_INTERVAL:
            session.last_seen = now
            await self._save(session, now)
        return session

    async def by_sid(self, sid: str) -> BrowserSession | None:
        digest = await self._kv.get(_SID + sid)
        if digest is None:
            return None
        raw = await self._kv.get(_SESSION + digest)
        return BrowserSession(**json.loads(raw)) if raw else None

    async def add_client(self, session: BrowserSession, client_id: str) -> None:
        if client_id not in session.clients:
            session.clients.append(client_id)
            await self._save(session, self._now())

    async def end(self, session: BrowserSession) -> None:
        await self._kv.delete(_SESSION + session.digest, _SID + session.sid)
        await self._kv.remove_from_set(_USER_SESSIONS + session.user_id, session.digest)

    async def end_all_for_user(self, user_id: str, *, keep: str | None = None) -> list[BrowserSession]:
        """End every session of the user, except the one whose digest is ``keep``."""
        ended: list[BrowserSession] = []
        for digest in await self._kv.set_members(_USER_SESSIONS + user_id):
            if digest == keep:
                continue
            raw = await self._kv.get(_SESSION + digest)
            if raw is not None:
                session = BrowserSession(**json.loads(raw))
                await self.end(session)
                ended.append(session)
            else:
                await self._kv.remove_from_set(_USER_SESSIONS + user_id, digest)
        if keep is None:
            await self._kv.delete(_USER_SESSIONS + user_id)
        return ended
