"""Signing keys: generation, encryption at rest, rotation, and the published JWKS.

One active key per configured algorithm signs new tokens. Rotation adds a new active key and
retires the old one, which stays published (and accepted for verification) until every token it
can have signed has expired. Every instance re-reads the key set from the database periodically,
so a rotation on one node reaches all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

from idp.config import KeySettings, TokenSettings
from idp.events import EventBus, SigningKeysPurged, SigningKeysRotated
from idp.security.encryption import Encryptor
from idp.security.tokens import random_token
from idp.storage.db import Database, DatabaseUnavailable
from idp.storage.kv import KeyValueError, KeyValueStore
from idp.storage.kv.subscription import Subscription
from idp.storage.models import SigningKey, utcnow
from idp.storage.repositories import SigningKeyRepository

JoseKey = RSAKey | ECKey | OKPKey


@dataclass(frozen=True)
class ConstantDocument:
    """A JSON document that changes rarely (JWKS, discovery): encoded once, with a strong ETag
    (RFC 9110 §8.8.3) so clients can revalidate it with If-None-Match."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, document: Any) -> ConstantDocument:
        body = json.dumps(document, separators=(",", ":")).encode()
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


# Clock skew allowed for in-flight tokens when deciding how long a retired key stays published.
_PUBLISH_GRACE = timedelta(minutes=5)
# Seconds before a reload that failed (the database unreachable) is tried again.
_RETRY_RELOAD = 5
log = logging.getLogger("idp.keys")
_BOOTSTRAP_LOCK = "lock:signing-keys"
# Every node hears of a rotation (or purge) at once on this channel and reloads; the periodic
# reload (keys.reload_interval) is the fallback for a node that missed it.
KEYS_CHANNEL = "signing_keys_changed"
# A token signed with a key this node doesn't know makes it reload the key set at most this often
# (a rotation on another node whose announcement was missed; or garbage kids from anyone).
_UNKNOWN_KID_RELOAD_EVERY = 5.0


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    status: str
    key: JoseKey
    public_jwk: dict[str, Any]
    created_at: datetime
    publish_until: datetime | None
    # For a rotated-out key: when it stopped (or stops) signing. It signs until then, so the key
    # that replaces it is published a while before it signs.
    retired_at: datetime | None = None


def canonical_alg(alg: str) -> str:
    """RFC 9864 names the Ed25519 JWS algorithm "Ed25519"; "EdDSA" is accepted as the older name."""
    return "Ed25519" if alg == "EdDSA" else alg


def generate_key(alg: str, rsa_key_size: int = 2048) -> JoseKey:
    if alg == "RS256":
        return RSAKey.generate_key(rsa_key_size, private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg in ("Ed25519", "EdDSA"):
        return OKPKey.generate_key("Ed25519", private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def _import_key(data: dict[str, Any]) -> JoseKey:
    kty = data.get("kty")
    if kty == "RSA":
        return RSAKey.import_key(data)
    if kty == "EC":
        return ECKey.import_key(data)
    if kty == "OKP":
        return OKPKey.import_key(data)
    raise ValueError(f"unsupported key type {kty!r}")


class KeyManager:
    def __init__(
        self,
        db: Database,
        encryptor: Encryptor,
        settings: KeySettings,
        tokens: TokenSettings,
        kv: KeyValueStore | None = None,
        events: EventBus | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._encryptor = encryptor
        self._settings = settings
        self._tokens = tokens
        self._kv = kv
        self._events = events
        self._clock = clock
        self._keys: dict[str, LoadedKey] = {}
        self._jwks_cache: tuple[tuple[str, ...], ConstantDocument] | None = None
        # Keys this instance just generated: loading them from their JWK again would repeat
        # the RSA consistency check (~50 ms per key) for nothing.
        self._generated: dict[str, JoseKey] = {}
        self._loaded_at = 0.0
        self._reload_lock = asyncio.Lock()
        self._unknown_kid_reload_at = float("-inf")
        self._listener: Subscription | None = None
        self._scheduler: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def ensure_active_keys(self) -> list[str]:
        """Create an active key for each configured algorithm that has none (first start)."""
        await self.reload()
        if all(self._active_for(alg) for alg in self._settings.algorithms):
            return []
        created: list[str] = []
        async with self._bootstrap_lock():
            async with self._db.session() as session:
                repo = SigningKeyRepository(session)
                active_algs = {key.alg for key in await repo.active()}
                for alg in self._settings.algorithms:
                    if alg not in active_algs:
                        created.append(await self._add_key(repo, alg))
        await self.reload()
        return created

    async def rotate(self, algorithms: Sequence[str] | None = None, *, immediately: bool = False) -> list[str]:
        """Add a new key per algorithm. It is published at once but signs only after
        ``keys.publish_ahead`` seconds, longer than relying parties may cache the JWKS: until then
        the old key goes on signing, then stays published until its tokens expire.
        ``immediately`` (a compromised key) hands over now."""
        algs = list(dict.fromkeys(canonical_alg(alg) for alg in algorithms or self._settings.algorithms))
        async with self._bootstrap_lock():
            created, old = await self._rotate_locked(algs, immediately=immediately)
        await self._changed()
        if self._events is not None:
            await self._events.publish(SigningKeysRotated(new_kids=tuple(created), retired_kids=tuple(old)))
        return created

    async def _rotate_locked(self, algs: Sequence[str], *, immediately: bool) -> tuple[list[str], list[str]]:
        now = self._clock()
        hand_over = now if immediately else now + timedelta(seconds=self._settings.publish_ahead)
        created: list[str] = []
        async with self._db.session() as session:
            repo = SigningKeyRepository(session)
            old = [key.kid for key in await repo.active() if key.alg in algs]
            await repo.retire(old, hand_over, hand_over + self.max_token_lifetime + _PUBLISH_GRACE)
            if immediately:
                # Keys still signing from an earlier rotation stop now too.
                await repo.end_signing(algs, now)
            for alg in algs:
                created.append(await self._add_key(repo, alg))
        return created, old

    async def rotate_if_due(self) -> list[str]:
        """The scheduled rotation (``keys.rotate_every``): rotate each algorithm whose newest key
        is older than that, once across all nodes (the check runs under the cross-node lock)."""
        every = self._settings.rotate_every
        if not every:
            return []
        async with self._bootstrap_lock():
            now = self._clock()
            async with self._db.session() as session:
                active = await SigningKeyRepository(session).active()
            newest: dict[str, datetime] = {}
            for key in active:
                newest[key.alg] = max(newest.get(key.alg, key.created_at), key.created_at)
            due = [
                alg
                for alg in self._settings.algorithms
                if alg in newest and now - newest[alg] >= timedelta(seconds=every)
            ]
            if not due:
                return []
            created, old = await self._rotate_locked(due, immediately=False)
        log.info("signing keys rotated on schedule", extra={"algorithms": due})
        await self._changed()
        if self._events is not None:
            await self._events.publish(SigningKeysRotated(new_kids=tuple(created), retired_kids=tuple(old)))
        return created

    async def purge_expired(self) -> int:
        """Delete retired keys whose publication window has closed (`idp keys purge`)."""
        async with self._db.session() as session:
            removed = await SigningKeyRepository(session).delete_expired(self._clock())
        await self._changed()
        if removed and self._events is not None:
            await self._events.publish(SigningKeysPurged(removed=removed))
        return removed

    async def reload(self) -> None:
        async with self._reload_lock:
            async with self._db.session() as session:
                rows = await SigningKeyRepository(session).published(self._clock())
            keys: dict[str, LoadedKey] = {}
            for row in rows:
                cached = self._keys.get(row.kid)
                if cached is not None and (cached.status, cached.retired_at) == (row.status, row.retired_at):
                    keys[row.kid] = cached
                    continue
                keys[row.kid] = self._load(row)
            self._keys = keys
            self._loaded_at = time.monotonic()

    async def refresh_if_stale(self) -> None:
        """Reload the key set when it is older than ``reload_interval``. While the database is
        unreachable the last known set stays in use (JWKS, discovery and token checks keep
        working) and the reload is tried again a few seconds later."""
        if time.monotonic() - self._loaded_at < self._settings.reload_interval:
            return
        try:
            await self.reload()
        except DatabaseUnavailable:
            log.warning("signing keys not reloaded: database unavailable; serving the last known set")
            self._loaded_at = time.monotonic() - self._settings.reload_interval + _RETRY_RELOAD

    async def reload_for_unknown_kid(self) -> bool:
        """A token names a key this node doesn't have: reload once, at most every few seconds
        (a rotation whose announcement this node missed). True when it reloaded."""
        now = time.monotonic()
        if now - self._unknown_kid_reload_at < _UNKNOWN_KID_RELOAD_EVERY:
            return False
        self._unknown_kid_reload_at = now
        try:
            await self.reload()
        except DatabaseUnavailable:
            return False
        return True

    # -- every node hears of a change ------------------------------------------------------------

    async def _changed(self) -> None:
        """The key set changed (committed): reload here, and tell every other node to."""
        await self.reload()
        if self._kv is not None:
            try:
                await self._kv.publish(KEYS_CHANNEL, "changed")
            except KeyValueError as exc:
                log.warning("could not announce a key change", extra={"error": type(exc).__name__})

    async def start(self) -> None:
        """Serving nodes: reload whenever any node announces a change; rotate on schedule."""
        if self._kv is not None:
            # Whatever is announced while unsubscribed is caught by the periodic reload, or by the
            # first token with an unknown kid.
            self._listener = Subscription(self._kv, KEYS_CHANNEL, self._heard, what="key change announcements")
            await self._listener.start()
        if self._settings.rotate_every:
            self._scheduler = asyncio.create_task(self._rotate_on_schedule())

    async def _heard(self, _message: str) -> None:
        try:
            await self.reload()
        except DatabaseUnavailable:
            log.warning("signing keys not reloaded: database unavailable; serving the last known set")

    async def _rotate_on_schedule(self) -> None:
        check_every = min(3600.0, max(1.0, self._settings.rotate_every / 10))
        while True:
            await asyncio.sleep(check_every)
            try:
                await self.rotate_if_due()
            except (DatabaseUnavailable, KeyValueError, TimeoutError) as exc:
                log.warning("scheduled key rotation postponed", extra={"error": type(exc).__name__})

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        self._listener = self._scheduler = None

    # -- queries -------------------------------------------------------------------------------

    @property
    def max_token_lifetime(self) -> timedelta:
        tokens = self._tokens
        return timedelta(seconds=max(tokens.access_token_ttl, tokens.id_token_ttl, tokens.refresh_token_ttl))

    @property
    def default_algorithm(self) -> str:
        return self._settings.algorithms[0]

    @property
    def algorithms(self) -> list[str]:
        return list(self._settings.algorithms)

    def signing_key(self, alg: str | None = None) -> LoadedKey:
        """The newest active key for ``alg`` (the default algorithm when None)."""
        wanted = canonical_alg(alg or self.default_algorithm)
        key = self._active_for(wanted)
        if key is None:
            raise LookupError(f"no active signing key for {wanted}")
        return key

    def verification_key(self, kid: str) -> LoadedKey | None:
        """A published key by id; retired keys past their window are not returned."""
        key = self._keys.get(kid)
        if key is None:
            return None
        if key.status == "retired" and key.publish_until is not None and key.publish_until <= self._clock():
            return None
        return key

    def published(self) -> list[LoadedKey]:
        now = self._clock()
        return [
            key
            for key in self._keys.values()
            if key.status == "active" or (key.publish_until is not None and key.publish_until > now)
        ]

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (RFC 7517 §5): public members only, each with kid, use and alg."""
        return {"keys": [dict(key.public_jwk) for key in self.published()]}

    def jwks_document(self) -> ConstantDocument:
        """The JWK Set encoded once per change of the published keys (its bytes and ETag)."""
        published = self.published()
        kids = tuple(key.kid for key in published)
        if self._jwks_cache is None or self._jwks_cache[0] != kids:
            body = {"keys": [dict(key.public_jwk) for key in published]}
            self._jwks_cache = (kids, ConstantDocument.of(body))
        return self._jwks_cache[1]

    # -- internals -----------------------------------------------------------------------------

    def _active_for(self, alg: str) -> LoadedKey | None:
        """The key that signs for ``alg`` now: a rotated-out key until its hand-over time (the
        oldest first, when rotations overlap), else the newest active key."""
        now = self._clock()
        handing_over = [
            key
            for key in self._keys.values()
            if key.alg == alg and key.status == "retired" and key.retired_at is not None and key.retired_at > now
        ]
        if handing_over:
            return min(handing_over, key=lambda key: (key.retired_at or now, key.created_at))
        candidates = [key for key in self._keys.values() if key.status == "active" and key.alg == alg]
        return max(candidates, key=lambda key: key.created_at) if candidates else None

    async def _add_key(self, repo: SigningKeyRepository, alg: str) -> str:
        key = await asyncio.to_thread(generate_key, alg, self._settings.rsa_key_size)
        self._generated[key.thumbprint()] = key
        kid = key.thumbprint()  # RFC 7638: stable, derived from the public key
        public = {**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": alg}
        private = json.dumps(key.as_dict(private=True)).encode()
        await repo.add(
            SigningKey(
                kid=kid,
                alg=alg,
                public_jwk=public,
                private_jwk_encrypted=self._encryptor.encrypt(private, associated_data=kid.encode()),
                status="active",
                created_at=self._clock(),
            )
        )
        return kid

    def _load(self, row: SigningKey) -> LoadedKey:
        # Always decrypt, even for a key generated here: it proves the stored copy is readable.
        private = json.loads(self._encryptor.decrypt(row.private_jwk_encrypted, associated_data=row.kid.encode()))
        generated = self._generated.pop(row.kid, None)
        key = generated if generated is not None and generated.thumbprint() == row.kid else _import_key(private)
        return LoadedKey(
            kid=row.kid,
            alg=row.alg,
            status=row.status,
            key=key,
            public_jwk=dict(row.public_jwk),
            created_at=row.created_at,
            publish_until=row.publish_until,
            retired_at=row.retired_at,
        )

    def _bootstrap_lock(self) -> _KvLock:
        return _KvLock(self._kv, _BOOTSTRAP_LOCK)


class _KvLock:
    """A short cross-instance lock in the key-value store, so two nodes starting together don't
    both create keys. Without a shared store (single node) it is a no-op."""

    def __init__(self, kv: KeyValueStore | None, name: str, ttl: float = 30.0) -> None:
        self._kv = kv
        self._name = name
        self._ttl = ttl
        self._token = ""

    async def __aenter__(self) -> None:
        if self._kv is None:
            return
        self._token = random_token(16)
        deadline = time.monotonic() + self._ttl
        while not await self._kv.set_if_absent(self._name, self._token, ttl=self._ttl):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not acquire {self._name}")
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        # Only our own lock: if it expired and another node took it, that node's stays.
        if self._kv is not None:
            await self._kv.delete_if_equal(self._name, self._token)
