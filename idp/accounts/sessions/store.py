"""The IdP's browser sessions (single sign-on), kept in the key-value store.

The cookie holds a random 256-bit value; the store knows it only by its SHA-256 digest. A session
ends after ``idle_ttl`` of inactivity or ``absolute_ttl`` after sign-in, whichever comes first.
``sid`` is the public session identifier relying parties see in ID and logout tokens; it stays
the same when the same user signs in again in the same browser (the cookie value changes), so
relying parties that got tokens in the session keep a logout channel to it.

Every session ended before its time publishes :class:`~idp.events.SessionEnded`: back-channel
logout and token revocation subscribe to it, so no caller has to remember them.

The clients that joined a session are also recorded in the database (one row when a client joins,
marked when the session ends), so a session the key-value store lost (a Redis restart without
persistence) still ends with a back-channel logout to each of them (:meth:`SessionStore.end_lost`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from idp.events import EventBus, SessionEnded
from idp.security.tokens import random_token, sha256_digest
from idp.storage.db import Database, DatabaseUnavailable
from idp.storage.kv import KeyValueStore
from idp.storage.repositories import ClientRepository, SessionClientRepository

log = logging.getLogger("idp.sessions")

_SESSION = "session:"
_USER_SESSIONS = "user_sessions:"
_SID = "session_sid:"
_USER_LOCK = "session_lock:"
# Refresh the idle deadline at most this often per session, to spare a write on every request.
_TOUCH_INTERVAL = 60
# How long sign-ins of one user wait for each other while the session limit is applied.
_LOCK_TTL = 5.0
_LOCK_WAIT = 2.0

LimitPolicy = Literal["end_oldest", "refuse"]


class SessionClientRecords(Protocol):
    """Where a client joining a session is recorded (the SQL repository, in the caller's unit of
    work: idp.storage.repositories.SessionClientRepository)."""

    async def join(self, sid: str, user_id: str, client_id: str, *, now: datetime, expires_at: datetime) -> None: ...


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
    # "Firefox 120 on Windows": what the session list shows.
    device: str | None = None
    # Changes at every authentication (the sid may not): proves a sign-in happened after a point.
    auth_id: str = ""
    # When the session began, to the microsecond: which is oldest, for the session limit.
    started: float = 0.0

    @classmethod
    def from_json(cls, raw: str) -> BrowserSession:
        data: dict[str, Any] = json.loads(raw)
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


class TooManySessions(Exception):
    """The user has ``limit`` sessions already and the policy refuses another."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"already {limit} sessions")
        self.limit = limit


class SessionStore:
    def __init__(
        self,
        kv: KeyValueStore,
        events: EventBus | None = None,
        *,
        idle_ttl: int,
        absolute_ttl: int,
        max_per_user: int = 0,
        limit_policy: LimitPolicy = "end_oldest",
        clock: Callable[[], float] = time.time,
        db: Database | None = None,
    ) -> None:
        self._kv = kv
        self._events = events
        # Where the clients of each session are recorded; None keeps them in the key-value store only.
        self._db = db
        self.idle_ttl = idle_ttl
        self.absolute_ttl = absolute_ttl
        self.max_per_user = max_per_user  # 0: no limit
        self.limit_policy = limit_policy
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    def _ttl(self, session: BrowserSession, now: int) -> int:
        return max(1, min(self.idle_ttl, session.created_at + self.absolute_ttl - now))

    def _expired(self, session: BrowserSession, now: int) -> bool:
        return now - session.created_at >= self.absolute_ttl or now - session.last_seen >= self.idle_ttl

    async def _save(self, session: BrowserSession, now: int, *, existing: bool = False) -> bool:
        """Write the session and its indexes. ``existing``: only if it is still stored (an update
        must not bring back a session another instance ended meanwhile); False when it was not."""
        ttl = self._ttl(session, now)
        raw = json.dumps(asdict(session))
        if existing:
            if not await self._kv.set_if_present(_SESSION + session.digest, raw, ttl=ttl):
                return False
        else:
            await self._kv.set(_SESSION + session.digest, raw, ttl=ttl)
        await self._kv.set(_SID + session.sid, session.digest, ttl=ttl)
        await self._kv.add_to_set(_USER_SESSIONS + session.user_id, session.digest, ttl=self.absolute_ttl)
        return True

    async def _get(self, digest: str) -> BrowserSession | None:
        raw = await self._kv.get(_SESSION + digest)
        return BrowserSession.from_json(raw) if raw else None

    # -- sign-in ---------------------------------------------------------------------------------

    async def create(
        self,
        user_id: str,
        *,
        amr: Sequence[str],
        acr: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        device: str | None = None,
    ) -> tuple[str, BrowserSession]:
        """A new session with a fresh id (never reuse one across sign-ins: session fixation),
        within the per-user limit: beyond it the oldest sessions end, or :class:`TooManySessions`
        is raised, as configured."""
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
            device=device,
            auth_id=random_token(12),
            started=self._clock(),
        )
        if self.max_per_user <= 0:  # no limit to apply: nothing to wait for
            await self._save(session, now)
            return cookie_value, session
        async with self._user_lock(user_id) as lock:
            await self._make_room(user_id)
            # Which session is oldest is the order they were stored in (see _settle_without_lock).
            session.started = self._clock()
            await self._save(session, now)
            if not lock.held:
                await self._settle_without_lock(session)
        return cookie_value, session

    async def reauthenticate(
        self,
        session: BrowserSession,
        *,
        amr: Sequence[str],
        acr: str | None,
        ip: str | None = None,
        user_agent: str | None = None,
        device: str | None = None,
    ) -> tuple[str, BrowserSession]:
        """The same user signed in again in this browser (step-up, ``prompt=login``, ``max_age``):
        a new cookie value (ASVS 7.2.4) and a new authentication, the same ``sid`` and clients.
        If the session ended meanwhile (from another device), this is a new session instead."""
        now = self._now()
        cookie_value = random_token(32)
        renewed = BrowserSession(
            **{
                **asdict(session),
                "digest": sha256_digest(cookie_value),
                "auth_time": now,
                "amr": list(amr),
                "acr": acr,
                "created_at": now,
                "last_seen": now,
                "ip": ip,
                "user_agent": (user_agent or "")[:512] or None,
                "device": device or session.device,
                "auth_id": random_token(12),
                "started": self._clock(),
            }
        )
        if not await self._renew(session, renewed, now):
            return await self.create(
                session.user_id, amr=amr, acr=acr, ip=ip, user_agent=user_agent, device=device or session.device
            )
        if self._db is not None and renewed.clients:
            async with self._db.session() as db_session:
                await SessionClientRepository(db_session).extend(renewed.sid, self._end_of(renewed))
        return cookie_value, renewed

    async def rotate(self, session: BrowserSession) -> tuple[str, BrowserSession] | None:
        """A new cookie value for the same session (after a privilege change, ASVS 7.2.4); None when
        the session ended meanwhile (it is not brought back)."""
        now = self._now()
        cookie_value = random_token(32)
        rotated = BrowserSession(**{**asdict(session), "digest": sha256_digest(cookie_value), "last_seen": now})
        if not await self._renew(session, rotated, now):
            return None
        return cookie_value, rotated

    async def _renew(self, session: BrowserSession, renewed: BrowserSession, now: int) -> bool:
        """Store ``renewed`` (the same sid under a new cookie value) in place of ``session``; False
        when that ended meanwhile. The sid's index is overwritten with the new digest by the save."""
        if not await self._kv.delete(_SESSION + session.digest):
            return False
        await self._kv.remove_from_set(_USER_SESSIONS + session.user_id, session.digest)
        await self._save(renewed, now)
        return True

    async def _make_room(self, user_id: str) -> None:
        if self.max_per_user <= 0:
            return
        live = await self.list_for_user(user_id)
        excess = len(live) + 1 - self.max_per_user
        if excess <= 0:
            return
        if self.limit_policy == "refuse":
            raise TooManySessions(self.max_per_user)
        for oldest in sorted(live, key=lambda item: (item.created_at, item.started))[:excess]:
            await self.end(oldest, reason="session_limit")

    async def _settle_without_lock(self, session: BrowserSession) -> None:
        """The limit for a sign-in that went ahead without the lock: the others waiting with it
        went ahead at the same moment, and each found room in _make_room. Each looks again now its
        own session is stored. A session missing from a look was stored after it, so is newer than
        every session that look kept: the last look sees them all, and the limit holds once every
        one has looked (the oldest end; with "refuse" the newest beyond the limit are refused)."""
        if self.max_per_user <= 0:
            return
        live = sorted(await self.list_for_user(session.user_id), key=lambda item: (item.started, item.created_at))
        beyond = live[self.max_per_user :]
        if not beyond:
            return
        if self.limit_policy == "refuse":
            if any(item.digest == session.digest for item in beyond):
                await self._discard(session)
                raise TooManySessions(self.max_per_user)
            return
        for oldest in live[: len(live) - self.max_per_user]:
            await self.end(oldest, reason="session_limit")

    class _Lock:
        def __init__(self, store: SessionStore, user_id: str) -> None:
            self.store = store
            self.key = _USER_LOCK + user_id
            self.token = random_token(8)
            self.held = False

        async def __aenter__(self) -> SessionStore._Lock:
            # Serialises sign-ins of one user across instances while the limit is applied; after
            # _LOCK_WAIT the sign-in goes ahead anyway (a node holding the lock may be slow or gone
            # until its TTL), and then settles the limit after the fact (_settle_without_lock).
            deadline = time.monotonic() + _LOCK_WAIT
            while not (held := await self.store._kv.set_if_absent(self.key, self.token, ttl=_LOCK_TTL)):
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.02)
            self.held = held
            return self

        async def __aexit__(self, *exc: object) -> None:
            if self.held:  # unless it expired meanwhile and another sign-in holds it now
                await self.store._kv.delete_if_equal(self.key, self.token)

    def _user_lock(self, user_id: str) -> SessionStore._Lock:
        return SessionStore._Lock(self, user_id)

    # -- use -------------------------------------------------------------------------------------

    async def count_active(self) -> int:
        """How many sessions are live now, across every user (for administrators)."""
        return await self._kv.count_prefix(_SESSION)

    async def load(self, cookie_value: str | None) -> BrowserSession | None:
        if not cookie_value or len(cookie_value) > 128:
            return None
        session = await self._get(sha256_digest(cookie_value))
        if session is None:
            return None
        now = self._now()
        if self._expired(session, now):
            await self._discard(session)
            return None
        if now - session.last_seen >= _TOUCH_INTERVAL:
            session.last_seen = now
            if not await self._save(session, now, existing=True):
                return None  # ended from elsewhere a moment ago
        return session

    async def by_sid(self, sid: str) -> BrowserSession | None:
        digest = await self._kv.get(_SID + sid)
        if digest is None:
            return None
        return await self._get(digest)

    async def list_for_user(self, user_id: str) -> list[BrowserSession]:
        """The user's live sessions, most recently active first."""
        now = self._now()
        found: list[BrowserSession] = []
        digests = sorted(await self._kv.set_members(_USER_SESSIONS + user_id))
        stored = await self._kv.get_many(*(_SESSION + digest for digest in digests)) if digests else []
        for digest, raw in zip(digests, stored, strict=True):
            session = BrowserSession.from_json(raw) if raw else None
            if session is None or session.user_id != user_id:
                await self._kv.remove_from_set(_USER_SESSIONS + user_id, digest)
            elif self._expired(session, now):
                await self._discard(session)
            else:
                found.append(session)
        return sorted(found, key=lambda item: (item.last_seen, item.created_at), reverse=True)

    def _end_of(self, session: BrowserSession) -> datetime:
        return datetime.fromtimestamp(session.created_at + self.absolute_ttl, UTC)

    async def add_client(
        self, session: BrowserSession, client_id: str, *, within: SessionClientRecords | None = None
    ) -> None:
        """``client_id`` received tokens within ``session``: it gets a back-channel logout when the
        session ends. Recorded in the database first (once per client and session; ``within``:
        the caller's unit of work, committed with the tokens), so the record outlives the
        key-value store."""
        if client_id not in session.clients:
            if within is not None:
                await within.join(
                    session.sid, session.user_id, client_id, now=self._utcnow(), expires_at=self._end_of(session)
                )
            elif self._db is not None:
                async with self._db.session() as db_session:
                    await SessionClientRepository(db_session).join(
                        session.sid, session.user_id, client_id, now=self._utcnow(), expires_at=self._end_of(session)
                    )
            session.clients.append(client_id)
            await self._save(session, self._now(), existing=True)

    def _utcnow(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- the end ---------------------------------------------------------------------------------

    async def _discard(self, session: BrowserSession) -> bool:
        removed = await self._kv.delete(_SESSION + session.digest)
        # The sid index may already point at the session's successor (rotation keeps the sid).
        if await self._kv.get(_SID + session.sid) == session.digest:
            await self._kv.delete(_SID + session.sid)
        await self._kv.remove_from_set(_USER_SESSIONS + session.user_id, session.digest)
        return removed > 0

    async def end(self, session: BrowserSession, *, reason: str) -> bool:
        """End the session now; publishes SessionEnded (once, for whichever caller removed it)."""
        if not await self._discard(session):
            return False
        clients = list(session.clients)
        if self._db is not None:
            clients += [client for client in await self._end_recorded(session.sid) if client not in clients]
        if self._events is not None:
            await self._events.publish(
                SessionEnded(user_id=session.user_id, sid=session.sid, reason=reason, clients=tuple(clients))
            )
        return True

    async def _end_recorded(self, sid: str) -> Sequence[str]:
        """Mark the record ended; its clients. With the database down the session still ends (its
        key-value copy names its clients): the record stays open, so a later logout naming the sid
        may send its logout tokens once more, for a session the relying party already ended."""
        assert self._db is not None
        try:
            async with self._db.session() as db_session:
                return await SessionClientRepository(db_session).end(sid, self._utcnow())
        except DatabaseUnavailable:
            log.warning("session end not recorded: the database is unavailable")
            return []

    async def end_lost(self, sid: str, *, user_id: str, client_id: str, reason: str) -> bool:
        """End the session ``sid`` that the key-value store no longer holds (lost with it) from the
        database's record of its clients, when ``client_id`` (say, the audience of a logout
        request's id_token_hint) is one of them: SessionEnded goes to every client recorded.
        False when there is no such session (ended already, expired, or another user's)."""
        if self._db is None or await self.by_sid(sid) is not None:
            return False  # a live session ends from its own browser (its cookie), not from here
        async with self._db.session() as db_session:
            repo = SessionClientRepository(db_session)
            rows = await repo.live_clients(sid, self._utcnow())
            if not any(row.client_id == client_id and row.user_id == user_id for row in rows):
                return False
            clients = await repo.end(sid, self._utcnow())
        if not clients:
            return False  # another request ended it a moment ago
        if self._events is not None:
            await self._events.publish(SessionEnded(user_id=user_id, sid=sid, reason=reason, clients=tuple(clients)))
        return True

    async def end_by_sid(self, user_id: str, sid: str, *, reason: str) -> bool:
        """End the user's session ``sid`` (False when there is no such live session of theirs)."""
        session = await self.by_sid(sid)
        if session is None or session.user_id != user_id:
            return False
        return await self.end(session, reason=reason)

    async def end_all_for_user(self, user_id: str, *, reason: str, keep: str | None = None) -> list[BrowserSession]:
        """End every session of the user, except the one whose digest is ``keep``."""
        ended: list[BrowserSession] = []
        for digest in await self._kv.set_members(_USER_SESSIONS + user_id):
            if digest == keep:
                continue
            session = await self._get(digest)
            if session is None:
                await self._kv.remove_from_set(_USER_SESSIONS + user_id, digest)
            elif await self.end(session, reason=reason):
                ended.append(session)
        if keep is None:
            await self._kv.delete(_USER_SESSIONS + user_id)
        return ended


# -- what users (and administrators) see of sessions ---------------------------------------------

# ASVS 7.5.2: ending another session needs the user to have authenticated again; a sign-in within
# this many seconds counts as that (otherwise the password is asked for).
REAUTH_WINDOW = 300


def recently_authenticated(session: BrowserSession, now: float | None = None) -> bool:
    return (time.time() if now is None else now) - session.auth_time <= REAUTH_WINDOW


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def describe(session: BrowserSession, *, current_sid: str | None, client_names: dict[str, str]) -> dict[str, Any]:
    """A session as the account pages and APIs show it; ``id`` is its public ``sid``."""
    return {
        "id": session.sid,
        "current": session.sid == current_sid,
        "device": session.device or "Unknown browser",
        "ip": session.ip,
        "signed_in_at": _iso(session.auth_time),
        "last_seen_at": _iso(session.last_seen),
        "amr": list(session.amr),
        "acr": session.acr,
        "applications": [client_names.get(client_id, client_id) for client_id in session.clients],
    }


async def describe_all(
    store: SessionStore, db: Database, user_id: str, *, current_sid: str | None
) -> list[dict[str, Any]]:
    """The user's live sessions, most recently active first, with the names of their applications."""
    sessions = await store.list_for_user(user_id)
    wanted = {client_id for session in sessions for client_id in session.clients}
    names: dict[str, str] = {}
    if wanted:
        async with db.session() as db_session:
            names = await ClientRepository(db_session).names(wanted)
    return [describe(session, current_sid=current_sid, client_names=names) for session in sessions]
